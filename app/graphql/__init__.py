"""The GraphQL API: thin resolvers over the services, in strawberry."""
