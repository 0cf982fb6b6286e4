"""``python -m wats_station``: the same as the ``wats-station`` command."""

from wats_station.cli import main

raise SystemExit(main())
