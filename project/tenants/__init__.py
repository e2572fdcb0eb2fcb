"""The example project's tenants: organizations that users belong to with a role."""
