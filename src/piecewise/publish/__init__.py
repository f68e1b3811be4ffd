"""Publication: releases decided against the ledger, written to the public store as
files, tiles and a dataset (docs/architecture.md)."""
