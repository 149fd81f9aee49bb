"""A throwaway local deployment of the bridge: ``python -m demo`` runs one to try a call.

Its parts (a Synapse on loopback, the bridge configured through its CLI and run as its own
process, the call page, scripted Matrix and LiveKit clients with recognisable media) are also
what the benchmarks and the tests drive the bridge with.
"""
