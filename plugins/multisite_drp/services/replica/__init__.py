"""The replica port (base), its Rucio adapter and the Replica Monitor."""
