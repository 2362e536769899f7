"""Tools for tests, benchmarks and local runs: real helper processes (collectors, servers), never imported by the product."""
