"""Attribution: atlases and the mapping of routing / relevance maps onto atlas regions (Desikan et al. 2006)."""
