"""The four stages of a tick, in order: acquisition, allocation, consumption, circulation."""
