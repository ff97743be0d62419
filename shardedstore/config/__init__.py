"""JSON config machinery: typed field readers, the registries, thewtex 0.3 configs."""
