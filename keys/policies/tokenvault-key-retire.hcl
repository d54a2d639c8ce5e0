# tokenvault-key-retire: the destructive half of KEK rotation, kept apart
# from tokenvault-rotate so that routine rotation cannot make data
# unreadable. Whoever holds this can raise min_decryption_version and trim
# old key versions, which makes every ciphertext (every wrapped DEK, in the
# live store AND in backups) under those versions permanently undecryptable.
# Give it to a human break-glass role or a reviewed job, not to the server.
# See keys/README.md, "Rotation".
#
# Written for mount "transit" and key "tokenvault"; keys/dev-vault-setup.sh
# rewrites the paths for --mount / --key.

# Set min_decryption_version (and min_encryption_version). This path also
# accepts deletion_allowed and exportable: a holder could set
# deletion_allowed=true, but cannot delete the key with this policy (that
# needs "delete" on transit/keys/tokenvault, which no tokenvault policy has).
path "transit/keys/tokenvault/config" {
  capabilities = ["update"]
}

# Delete key versions below min_available_version for good.
path "transit/keys/tokenvault/trim" {
  capabilities = ["update"]
}

# Read latest_version / min_decryption_version / min_available_version.
path "transit/keys/tokenvault" {
  capabilities = ["read"]
}

path "auth/token/lookup-self" {
  capabilities = ["read"]
}
