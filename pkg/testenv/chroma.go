package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromadb-rollback/chromadb-rollback/pkg/chroma"
)

// ChromaPackage is the npm package holding the Chroma 1.0 server; newer
// versions need a newer glibc than the build machines have.
const ChromaPackage = "chromadb-js-bindings-linux-x64-gnu"

// ChromaStartTimeout bounds the wait for a started server's heartbeat.
const ChromaStartTimeout = 60 * time.Second

// ToolsDir finds <repo root>/.tools (RepoRoot). The environment variable
// CHROMADB_ROLLBACK_TOOLS overrides it.
func ToolsDir() (string, error) {
	if d := os.Getenv("CHROMADB_ROLLBACK_TOOLS"); d != "" {
		return filepath.Abs(d)
	}
	root, err := RepoRoot()
	if err != nil {
		return "", fmt.Errorf("%w; set CHROMADB_ROLLBACK_TOOLS", err)
	}
	return filepath.Join(root, ".tools"), nil
}

// RepoRoot is the nearest directory above the working directory that
// holds go.work.
func RepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.work above %s", wd)
		}
		dir = parent
	}
}

// ChromaPackageDir is the installed server package, or an error telling to
// run `make tools`.
func ChromaPackageDir() (string, error) {
	tools, err := ToolsDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(tools, "node_modules", ChromaPackage)
	if _, err := os.Stat(filepath.Join(dir, "package.json")); err != nil {
		return "", fmt.Errorf("chroma server package not found at %s: run `make tools`", dir)
	}
	return dir, nil
}

// Chroma is a Chroma server process listening on 127.0.0.1.
type Chroma struct {
	// URL is the server's base URL, e.g. "http://127.0.0.1:41234".
	URL string
	// DataDir is the persist directory.
	DataDir string
	// Port is the TCP port, kept across restarts.
	Port int

	logw   io.Writer
	pkgDir string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has exited
	waitErr error
}

// LaunchChroma starts a server persisting into dataDir on port (0 picks a
// free one), writing its output to logw (may be nil), and returns once it
// answers its heartbeat. ctx bounds the start only; stop the server with
// Close or Stop. It suits `make run` and benchmarks as well as tests.
func LaunchChroma(ctx context.Context, dataDir string, port int, logw io.Writer) (*Chroma, error) {
	pkgDir, err := ChromaPackageDir()
	if err != nil {
		return nil, err
	}
	if dataDir, err = filepath.Abs(dataDir); err != nil {
		return nil, err
	}
	if port == 0 {
		if port, err = freePort(); err != nil {
			return nil, err
		}
	}
	if logw == nil {
		logw = io.Discard
	}
	c := &Chroma{
		URL:     "http://127.0.0.1:" + strconv.Itoa(port),
		DataDir: dataDir,
		Port:    port,
		logw:    logw,
		pkgDir:  pkgDir,
	}
	if err := c.start(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Chroma) start(ctx context.Context) error {
	node, err := exec.LookPath("node")
	if err != nil {
		return fmt.Errorf("node not found (needed to run the chroma server): %w", err)
	}
	const script = "require(process.argv[1]).cli(['chroma','run','--path',process.argv[2],'--host','127.0.0.1','--port',process.argv[3]])"
	cmd := exec.Command(node, "-e", script, c.pkgDir, c.DataDir, strconv.Itoa(c.Port))
	cmd.Stdout, cmd.Stderr = c.logw, c.logw
	// Own process group, so stopping it stops everything it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start chroma: %w", err)
	}
	done := make(chan struct{})
	c.mu.Lock()
	c.cmd, c.done = cmd, done
	c.mu.Unlock()
	go func() {
		err := cmd.Wait()
		c.mu.Lock()
		c.waitErr = err
		c.mu.Unlock()
		close(done)
	}()
	if err := c.waitHealthy(ctx, done); err != nil {
		c.Stop()
		return err
	}
	return nil
}

func (c *Chroma) waitHealthy(ctx context.Context, done <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, ChromaStartTimeout)
	defer cancel()
	hc := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+"/api/v2/heartbeat", nil)
		if resp, err := hc.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-done:
			c.mu.Lock()
			err := c.waitErr
			c.mu.Unlock()
			return fmt.Errorf("chroma server on port %d exited before answering: %v", c.Port, err)
		case <-ctx.Done():
			return fmt.Errorf("chroma server on port %d did not answer its heartbeat: %w", c.Port, ctx.Err())
		case <-tick.C:
		}
	}
}

// signal sends sig to the server's process group and waits up to wait for
// it to exit; it reports whether it exited.
func (c *Chroma) signal(sig syscall.Signal, wait time.Duration) bool {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil {
		return true
	}
	select {
	case <-done:
		return true
	default:
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	select {
	case <-done:
		return true
	case <-time.After(wait):
		return false
	}
}

// Stop kills the server at once (SIGKILL to its process group), as a crash
// would, and waits for it to exit. It is idempotent.
func (c *Chroma) Stop() {
	c.signal(syscall.SIGKILL, time.Minute)
}

// Close stops the server gracefully (SIGTERM, then SIGKILL after 10 s).
func (c *Chroma) Close() error {
	if !c.signal(syscall.SIGTERM, 10*time.Second) {
		c.Stop()
	}
	return nil
}

// Freeze stops the server's process group (SIGSTOP): it keeps its port and
// takes connections, and answers nothing, as a hung or overloaded server.
// The returned thaw continues it (SIGCONT); it is idempotent and also runs
// at the test's cleanup.
func (c *Chroma) Freeze(tb testing.TB) (thaw func()) {
	tb.Helper()
	pid := c.Pid()
	if pid == 0 {
		tb.Fatal("testenv: Freeze: Chroma is not running")
	}
	if err := syscall.Kill(-pid, syscall.SIGSTOP); err != nil {
		tb.Fatalf("testenv: freeze Chroma: %v", err)
	}
	var once sync.Once
	thaw = func() { once.Do(func() { _ = syscall.Kill(-pid, syscall.SIGCONT) }) }
	tb.Cleanup(thaw)
	return thaw
}

// Pid is the server process's id (0 when it is not running), so that a
// benchmark can read what the server spent.
func (c *Chroma) Pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil || c.cmd.Process == nil {
		return 0
	}
	return c.cmd.Process.Pid
}

// Running reports whether the server process is alive.
func (c *Chroma) Running() bool {
	c.mu.Lock()
	done := c.done
	c.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// StartChroma starts a server for the test with its data in a temporary
// directory, and stops it when the test ends. Server output goes to a file
// that is logged if the test failed. A missing server package fails the
// test (run `make tools`); it is never skipped.
func StartChroma(tb testing.TB) *Chroma {
	tb.Helper()
	dir := tb.TempDir()
	logPath := filepath.Join(dir, "chroma.log")
	f, err := os.Create(logPath)
	if err != nil {
		tb.Fatalf("create chroma log: %v", err)
	}
	c, err := LaunchChroma(context.Background(), filepath.Join(dir, "data"), 0, f)
	if err != nil {
		f.Close()
		dumpLog(tb, logPath)
		tb.Fatalf("start chroma: %v", err)
	}
	tb.Cleanup(func() {
		_ = c.Close()
		f.Close()
		if tb.Failed() {
			dumpLog(tb, logPath)
		}
	})
	return c
}

// dumpLog logs the end of a server log.
func dumpLog(tb testing.TB, path string) {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	const tail = 16 << 10
	if len(b) > tail {
		b = b[len(b)-tail:]
	}
	tb.Logf("chroma server output (%s):\n%s", path, b)
}

// Restart starts the server again on the same port and data directory
// (killing it first if it still runs) and waits for its heartbeat.
func (c *Chroma) Restart(tb testing.TB) {
	tb.Helper()
	c.Stop()
	if err := c.start(context.Background()); err != nil {
		tb.Fatalf("restart chroma: %v", err)
	}
}

// Client returns a client for the server, failing the test if it cannot.
func (c *Chroma) Client(tb testing.TB, opts ...chroma.Option) *chroma.Client {
	tb.Helper()
	cl, err := chroma.New(c.URL, opts...)
	if err != nil {
		tb.Fatalf("chroma client: %v", err)
	}
	return cl
}

// freePort returns a port free on 127.0.0.1 for a server that binds it
// later (and again after a restart). It is taken below the kernel's
// ephemeral range where there is room: a port from that range, once
// released, can go to any outgoing connection before the server binds it
// (a cluster node, its port taken, silently never started listening).
// A port is handed out once per process.
func freePort() (int, error) {
	lo := ephemeralLow()
	portsMu.Lock()
	defer portsMu.Unlock()
	if lo-minPort >= 1000 {
		for range 200 {
			p := minPort + rand.IntN(lo-minPort)
			if portsGiven[p] {
				continue
			}
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				continue
			}
			l.Close()
			portsGiven[p] = true
			return p, nil
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("find a free port: not a TCP address")
	}
	portsGiven[addr.Port] = true
	return addr.Port, nil
}

// minPort is the lowest port freePort hands out.
const minPort = 10000

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{} // by freePort in this process
)

// ephemeralLow is the lowest port the kernel takes for outgoing
// connections and listeners on port 0 (Linux: ip_local_port_range; the
// IANA range elsewhere).
func ephemeralLow() int {
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if l, err := strconv.Atoi(f[0]); err == nil && l > 0 {
				return l
			}
		}
	}
	return 49152
}
