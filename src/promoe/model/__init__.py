"""Models: backbones, sparse upcycling, MoE layers, routers, the hypernetwork, losses, statistics."""
