# tokenvault-service: the policy of the running `tokenvault serve` process
# (kek.provider = "vault"). Least privilege: it can use its ONE transit key to
# wrap and unwrap data keys, read that key's version metadata, and keep its
# own token alive. Nothing else: no other key, no other mount, no key
# management, no token creation, no secret-id minting.
#
# Written for mount "transit" and key "tokenvault". keys/dev-vault-setup.sh
# rewrites the `transit/` prefix and the `/tokenvault` key segment of each
# path when it is given --mount / --key; edit by hand the same way for a
# production Vault. Attach it with `token_no_default_policy=true` on the
# AppRole role so that Vault's built-in `default` policy (cubbyhole, sys/tools,
# sys/wrapping, ...) is not added on top.

# Wrap a subject's (or the system's) data key: tokenvault sends the DEK as
# plaintext, single or as batch_input, and stores only the ciphertext
# ("vault:vN:..."). Encrypt is a write (POST) on an existing key, hence
# "update". Encrypt on a key that does not exist yet would create it and needs
# "create", which is deliberately not granted: the key is made by the
# operator (keys/dev-vault-setup.sh), never by the server.
path "transit/encrypt/tokenvault" {
  capabilities = ["update"]
}

# Unwrap a data key on a DEK-cache miss (and the system key at start-up),
# single or batch_input. Also a write (POST).
path "transit/decrypt/tokenvault" {
  capabilities = ["update"]
}

# Read the key's metadata: type, latest_version, min_decryption_version,
# min_available_version (for `keys status`, start-up checks and logging).
# "read" on this exact path does NOT allow writing the key config
# (transit/keys/tokenvault/config), rotating, trimming, exporting or
# deleting; those are other paths or other capabilities.
path "transit/keys/tokenvault" {
  capabilities = ["read"]
}

# Start-up check of its own token (policies, ttl, renewable) and TTL
# bookkeeping. GET auth/token/lookup-self.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}

# Renew its own token before it expires (until the role's token_max_ttl;
# after that the server logs in again with its AppRole secret_id).
path "auth/token/renew-self" {
  capabilities = ["update"]
}
