"""wats-station: the command line, the demo, the WATS emulator and the systemd unit template.

The daemon lives in ``wats_station.supervisor``, its workers in ``wats_station.workers``, the
wire in ``wats_station.ipc`` and the converters in ``wats_station.converters``. Nothing below
this room imports it.
"""
