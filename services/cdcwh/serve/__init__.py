"""The serving layer: the semantic model, its SQL compiler, and the GraphQL API over the marts."""
