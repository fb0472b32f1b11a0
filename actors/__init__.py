"""Everything that runs on Ray: provider pools, session actors, the directory, the ingress."""
