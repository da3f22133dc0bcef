"""The seed's pages: sign-in, "OAuth 2.0 API Tokens" for users and for admins, members."""
