"""Aggregation engines that run the SQL definition of the cell statistics."""
