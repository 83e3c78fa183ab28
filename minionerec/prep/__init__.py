"""Data preparation scripts (Amazon raw -> interactions, the demo dataset); run as
`python -m minionerec.prep.<script>`."""
