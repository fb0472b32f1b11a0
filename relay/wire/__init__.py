"""Pure translation between Relay's OpenAI-shaped requests and events and each provider's wire format."""
