"""Where tests come from: M-Lab's views in BigQuery, or files exported from them."""
