"""The converter contract and the standard converters (WSJF, WSXF, WSTF, CSV).

Loaded only inside converter workers.
"""
