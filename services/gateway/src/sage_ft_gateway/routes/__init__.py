"""HTTP routes. Each one is thin: parse, call a service object, shape the response."""
