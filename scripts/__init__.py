"""Entry points that are not the library: the WATS emulator, sample generators, benchmarks."""
