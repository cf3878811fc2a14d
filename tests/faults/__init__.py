"""Fault-injection suite (issue 10): the plugin keeps work running under the faults it exists for."""
