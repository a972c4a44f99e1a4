"""``sage-ft``: the command line. It talks HTTP to the gateway and never imports torch."""
