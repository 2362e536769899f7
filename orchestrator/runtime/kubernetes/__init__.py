"""The Kubernetes runtime: one Pod per key, and its pure Pod rules."""
