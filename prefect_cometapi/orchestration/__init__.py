"""What every image task does around its request: the call, its options and run names, the API
limits, named blocks and the async twins."""
