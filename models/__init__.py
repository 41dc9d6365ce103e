"""Model registry and offline loaders (nothing is ever fetched from a model hub)."""
