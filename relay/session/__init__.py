"""A session's runs: history, context, the steps of a run, load balancing and the backends that host sessions."""
