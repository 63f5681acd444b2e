// Package deploytest holds the tests of the NATS deployment files under
// deploy/: they load the real nats-server configs (deploy/nats) into the
// servers they start, with the passwords the files read from the
// environment, so that a change to a file that breaks a role, TLS or the
// cluster fails here. The services run with their own users in the
// CLI module's TestDeployServices* (cmd/chromadb-rollback), which can import
// them.
package deploytest
