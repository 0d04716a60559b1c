"""The one place that answers "may USER do ACTION on OBJECT"."""
