"""What supervision shows: events and listeners, outcome counters, the health score, Prometheus, Flower."""
