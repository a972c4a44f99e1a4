"""sage-ft gateway: the one public entry point. It validates, records jobs and enqueues ids; it never trains."""
