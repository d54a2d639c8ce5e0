# tokenvault-rotate: the policy of the operator (or a scheduled job) that
# runs `tokenvault keys rotate --config F` and `tokenvault keys status`.
# It adds a new KEK version and moves every stored wrapped DEK onto it.
# It can NOT encrypt or decrypt (it never sees a data key in plaintext),
# change the key's config (min_decryption_version, deletion_allowed,
# exportable), trim old versions, export or delete the key: retiring old
# versions is destructive and belongs to tokenvault-key-retire.hcl.
#
# Written for mount "transit" and key "tokenvault"; keys/dev-vault-setup.sh
# rewrites the paths for --mount / --key.

# Create a new key version; new wraps use it from then on. POST, "update".
path "transit/keys/tokenvault/rotate" {
  capabilities = ["update"]
}

# Re-encrypt a stored wrapped DEK under the latest key version inside Vault:
# the plaintext DEK never leaves Vault. POST with batch_input, "update".
path "transit/rewrap/tokenvault" {
  capabilities = ["update"]
}

# Read latest_version / min_decryption_version before and after rotating,
# and for `keys status`.
path "transit/keys/tokenvault" {
  capabilities = ["read"]
}

# The tokenvault client checks the token it was given before starting work.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
