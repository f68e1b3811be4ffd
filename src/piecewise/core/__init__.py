"""The shared vocabulary at the bottom of the flow: the configuration, periods, statistic
names, schemas, areas and errors that every step uses (docs/architecture.md)."""
