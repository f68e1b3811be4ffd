"""The web side: the statistics API, the survey, and the local server of the site and the
public data (docs/architecture.md)."""
