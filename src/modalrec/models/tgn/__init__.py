"""MM-TGN: memory, temporal graph attention, time encoding over a continuous-time event stream."""
