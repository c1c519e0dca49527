"""Domain services: the business rules, independent of GraphQL and HTTP."""
