"""Bridges between vLLM's internal types and layerbus wire messages.

Used only by the coordinator and the stages (they import vLLM); the protocol in
shared/wire/ and the gateway never import this package.
"""
