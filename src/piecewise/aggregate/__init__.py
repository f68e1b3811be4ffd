"""Aggregation: the private store's tests into cell statistics, on this machine or in
BigQuery, and which cells privacy lets out (docs/architecture.md)."""
