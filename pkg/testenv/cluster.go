package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/natsconn"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// DeployPasswordEnv names, per user of deploy/nats/accounts.conf, the
// environment variable the server reads its password from.
var DeployPasswordEnv = map[string]string{
	"snapshotter": "NATS_SNAPSHOTTER_PASSWORD",
	"restorer":    "NATS_RESTORER_PASSWORD",
	"watchdog":    "NATS_WATCHDOG_PASSWORD",
	"auditor":     "NATS_AUDITOR_PASSWORD",
	"operator":    "NATS_OPERATOR_PASSWORD",
	"dashboard":   "NATS_DASHBOARD_PASSWORD",
	"job_reindex": "NATS_JOB_REINDEX_PASSWORD",
	"sys":         "NATS_SYS_PASSWORD",
}

// DeployInboxPrefix is the inbox prefix a user of accounts.conf must use,
// "" for the users allowed _INBOX.> (services and operators).
var DeployInboxPrefix = map[string]string{
	"dashboard":   "_INBOX_dashboard",
	"job_reindex": "_INBOX_reindex",
}

// DeployPasswords holds the password of each user of accounts.conf.
type DeployPasswords map[string]string

// Config returns the connection settings of user: its password and, for
// the users confined to their own inboxes, the inbox prefix.
func (p DeployPasswords) Config(user string) natsconn.Config {
	return natsconn.Config{User: user, Password: p[user], InboxPrefix: DeployInboxPrefix[user]}
}

// SetDeployPasswords sets every password variable accounts.conf reads to a
// fresh random value (tb.Setenv, so the test must not be parallel) and
// returns the passwords by user. Call it before loading a deploy config.
func SetDeployPasswords(tb testing.TB) DeployPasswords {
	tb.Helper()
	p := DeployPasswords{}
	for user, env := range DeployPasswordEnv {
		b := make([]byte, 18)
		if _, err := rand.Read(b); err != nil {
			tb.Fatal(err)
		}
		// A letter first: the server parses the variable as a config
		// value, and a leading digit could make a number of it. The
		// marker lets the check of the test artifacts find a leak.
		p[user] = SecretMarker + hex.EncodeToString(b)
		tb.Setenv(env, p[user])
	}
	return p
}

// DeployDir is <repo root>/deploy.
func DeployDir(tb testing.TB) string {
	tb.Helper()
	tools, err := ToolsDir()
	if err != nil {
		tb.Fatalf("find the repo root: %v", err)
	}
	return filepath.Join(filepath.Dir(tools), "deploy")
}

// LoadDeployConfig processes the nats-server config files under
// deploy/nats (e.g. "single.conf", or "single.conf" and "tls.conf" to
// include TLS) as `nats-server -c` would, several files through a wrapper
// that includes them in order, and then fits the result to a test: a
// random client port on 127.0.0.1, no monitoring port, the JetStream
// store in a temp dir, no signal handlers, no log unless NATS_TEST_LOG is
// set. The password variables must be set (SetDeployPasswords).
func LoadDeployConfig(tb testing.TB, files ...string) *server.Options {
	tb.Helper()
	o := loadDeployOptions(tb, files...)
	o.Host, o.Port = "127.0.0.1", server.RANDOM_PORT
	o.StoreDir = tb.TempDir()
	return o
}

func loadDeployOptions(tb testing.TB, files ...string) *server.Options {
	tb.Helper()
	if len(files) == 0 {
		tb.Fatal("LoadDeployConfig: name at least one file under deploy/nats")
	}
	dir := filepath.Join(DeployDir(tb), "nats")
	path := filepath.Join(dir, files[0])
	if len(files) > 1 {
		// Includes are relative to the including file; nats-server
		// does not take absolute include paths.
		wdir := tb.TempDir()
		var b strings.Builder
		for _, f := range files {
			rel, err := filepath.Rel(wdir, filepath.Join(dir, f))
			if err != nil {
				tb.Fatal(err)
			}
			fmt.Fprintf(&b, "include %q\n", rel)
		}
		path = filepath.Join(wdir, "wrapper.conf")
		if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	o, err := server.ProcessConfigFile(path)
	if err != nil {
		tb.Fatalf("load %s: %v", strings.Join(files, " + "), err)
	}
	o.HTTPPort = 0
	o.NoSigs = true
	o.NoLog = os.Getenv("NATS_TEST_LOG") == ""
	o.Debug, o.Trace = false, false
	return o
}

// StartDeployServer runs a server from the deploy config files (see
// LoadDeployConfig), shut down at cleanup.
func StartDeployServer(tb testing.TB, files ...string) *server.Server {
	tb.Helper()
	return RunServer(tb, LoadDeployConfig(tb, files...))
}

// RunServer runs a server with o, waits until it accepts clients and shuts
// it down at cleanup.
func RunServer(tb testing.TB, o *server.Options) *server.Server {
	tb.Helper()
	s, err := server.NewServer(o)
	if err != nil {
		tb.Fatalf("nats-server: %v", err)
	}
	if !o.NoLog {
		s.ConfigureLogger()
	}
	go s.Start()
	if !s.ReadyForConnections(15 * time.Second) {
		s.Shutdown()
		tb.Fatalf("nats-server %s did not accept clients within 15s", o.ServerName)
	}
	tb.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// ClusterOptions configure StartCluster.
type ClusterOptions struct {
	// Configure, when set, changes node i's options (0-based) after they
	// were loaded and fitted to the test, before every start and restart.
	Configure func(i int, o *server.Options)
}

// Cluster is the 3-node JetStream cluster of deploy/nats/cluster/node-*.conf
// running in-process: fixed free ports on 127.0.0.1 (kept across restarts),
// a JetStream store per node in a temp dir.
type Cluster struct {
	tb   testing.TB
	opts ClusterOptions

	clientPorts, routePorts []int
	storeDirs               []string

	mu      sync.Mutex
	servers []*server.Server
}

// ClusterSize is the number of nodes of the deploy cluster.
const ClusterSize = 3

// StartCluster starts the three nodes from deploy/nats/cluster/node-1..3.conf
// and waits until they route to each other and JetStream has a meta
// leader. The password variables must be set (SetDeployPasswords). Every
// node is shut down at cleanup.
func StartCluster(tb testing.TB, opts ...ClusterOptions) *Cluster {
	tb.Helper()
	c := &Cluster{tb: tb, servers: make([]*server.Server, ClusterSize)}
	if len(opts) > 0 {
		c.opts = opts[0]
	}
	for range ClusterSize {
		cp, err := freePort()
		if err != nil {
			tb.Fatal(err)
		}
		rp, err := freePort()
		if err != nil {
			tb.Fatal(err)
		}
		c.clientPorts = append(c.clientPorts, cp)
		c.routePorts = append(c.routePorts, rp)
		c.storeDirs = append(c.storeDirs, tb.TempDir())
	}
	tb.Cleanup(func() {
		for i := range ClusterSize {
			c.Kill(i)
		}
	})
	for i := range ClusterSize {
		c.start(i)
	}
	c.WaitReady(tb, 30*time.Second)
	return c
}

// nodeOptions loads node i's config file and fits it to the test.
func (c *Cluster) nodeOptions(i int) *server.Options {
	o := loadDeployOptions(c.tb, fmt.Sprintf("cluster/node-%d.conf", i+1))
	o.Host, o.Port = "127.0.0.1", c.clientPorts[i]
	o.StoreDir = c.storeDirs[i]
	o.Cluster.Host, o.Cluster.Port = "127.0.0.1", c.routePorts[i]
	var routes []string
	for _, p := range c.routePorts {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	o.Routes = server.RoutesFromStr(strings.Join(routes, ","))
	if c.opts.Configure != nil {
		c.opts.Configure(i, o)
	}
	return o
}

func (c *Cluster) start(i int) {
	c.tb.Helper()
	o := c.nodeOptions(i)
	s, err := server.NewServer(o)
	if err != nil {
		c.tb.Fatalf("node %d: %v", i, err)
	}
	if !o.NoLog {
		s.ConfigureLogger()
	}
	go s.Start()
	if !s.ReadyForConnections(15 * time.Second) {
		s.Shutdown()
		c.tb.Fatalf("node %d did not accept clients within 15s", i)
	}
	c.mu.Lock()
	c.servers[i] = s
	c.mu.Unlock()
}

// Server is node i, nil while it is down.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.servers[i]
}

// Servers are the nodes, nil for those that are down.
func (c *Cluster) Servers() []*server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*server.Server(nil), c.servers...)
}

// ClientURL is node i's client URL (also while it is down).
func (c *Cluster) ClientURL(i int) string {
	return fmt.Sprintf("nats://127.0.0.1:%d", c.clientPorts[i])
}

// URLs lists every node's client URL, comma-separated, for nats.Connect:
// a client moves to another node when its node goes down.
func (c *Cluster) URLs() string {
	urls := make([]string, ClusterSize)
	for i := range urls {
		urls[i] = c.ClientURL(i)
	}
	return strings.Join(urls, ",")
}

// Connect connects to the cluster with cfg (e.g. DeployPasswords.Config),
// reconnecting forever; the connection is closed at cleanup.
func (c *Cluster) Connect(tb testing.TB, cfg natsconn.Config, opts ...nats.Option) *nats.Conn {
	tb.Helper()
	nc, err := cfg.Connect(c.URLs(), append([]nats.Option{nats.Name(tb.Name()), nats.MaxReconnects(-1),
		nats.ReconnectWait(100 * time.Millisecond)}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// Kill shuts node i down at once (its clients are cut off and reconnect
// elsewhere) and waits until it is gone. It is a no-op on a node that is
// down.
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	s := c.servers[i]
	c.servers[i] = nil
	c.mu.Unlock()
	if s == nil {
		return
	}
	s.Shutdown()
	s.WaitForShutdown()
}

// Restart starts node i again (killing it first if it runs) on its ports
// and store, and waits until it is routed to the others and its JetStream
// is current.
func (c *Cluster) Restart(tb testing.TB, i int) {
	tb.Helper()
	c.Kill(i)
	c.start(i)
	c.WaitReady(tb, 30*time.Second)
}

// JetStreamLeader is the index of the node that is the JetStream meta
// leader, -1 when none is.
func (c *Cluster) JetStreamLeader() int {
	for i, s := range c.Servers() {
		if s != nil && s.JetStreamIsLeader() {
			return i
		}
	}
	return -1
}

// DeployAccount is the account of deploy/nats/accounts.conf that holds the
// project's streams.
const DeployAccount = "CHROMA"

// StreamLeader is the index of the node that leads stream (of
// DeployAccount; a bucket's stream is KV_<bucket>, the object store's
// OBJ_<bucket>), -1 when none does.
func (c *Cluster) StreamLeader(stream string) int {
	for i, s := range c.Servers() {
		if s != nil && s.JetStreamIsStreamLeader(DeployAccount, stream) {
			return i
		}
	}
	return -1
}

// KillStreamLeader kills the node that leads stream (see StreamLeader),
// waiting up to 10s for the stream to have a leader, and returns its index.
func (c *Cluster) KillStreamLeader(tb testing.TB, stream string) int {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if i := c.StreamLeader(stream); i >= 0 {
			c.Kill(i)
			return i
		}
		if time.Now().After(deadline) {
			tb.Fatalf("stream %s has no leader to kill", stream)
			return -1
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitReady waits until every running node routes to every other running
// node, JetStream has a meta leader, and every running node's JetStream
// is current.
func (c *Cluster) WaitReady(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := c.ready()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("cluster not ready after %s: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *Cluster) ready() error {
	servers := c.Servers()
	running := 0
	for _, s := range servers {
		if s != nil {
			running++
		}
	}
	for i, s := range servers {
		if s == nil {
			continue
		}
		if !routedToAll(s, running-1) {
			return fmt.Errorf("node %d routes to %d of %d other nodes", i, s.NumRoutes(), running-1)
		}
	}
	if c.JetStreamLeader() < 0 {
		return fmt.Errorf("no JetStream meta leader")
	}
	for i, s := range servers {
		if s != nil && !s.JetStreamIsCurrent() {
			return fmt.Errorf("node %d's JetStream is not current", i)
		}
	}
	return nil
}

// routedToAll reports whether s has routes to n other servers. Servers may
// open several routes to each peer (pooling), so it counts distinct peers.
func routedToAll(s *server.Server, n int) bool {
	rz, err := s.Routez(nil)
	if err != nil {
		return false
	}
	peers := map[string]bool{}
	for _, r := range rz.Routes {
		peers[r.RemoteID] = true
	}
	return len(peers) >= n
}
