"""The Docker Engine runtime: the adapter, its pure spec rules and its watch."""
