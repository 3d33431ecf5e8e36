"""Operator tools: the `layerbus` command, `layerbus serve`'s launcher, health checks, targets."""
