"""Admission control: bulkheads and load shedding, deciding which messages run now."""
