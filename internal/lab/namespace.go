// Package lab builds throwaway network namespaces on the real kernel for
// the kernel tests and the drills: namespaces with conntrack switched on,
// veth pairs between them, tables filled, emptied and counted over
// ctnetlink, the ct-exporter binary built from the module, and the CPU
// time and memory of the processes a drill starts.
//
// Every function returns an error instead of failing a test, so that a
// standalone program (ct-drill) can use it; package nstest wraps it for
// tests. Nothing here changes a global sysctl: SetSysctl refuses the keys
// that are one value for the whole machine.
package lab

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ct-exporter/ct-exporter/internal/ctnl"
	"github.com/ct-exporter/ct-exporter/internal/netns"
)

// TrackingRuleset is the nftables ruleset whose ct state match makes the
// kernel track every connection of a namespace: input, output and
// forwarded traffic.
const TrackingRuleset = `table inet ctx {
	chain input { type filter hook input priority 0; policy accept; ct state established,related,new accept; }
	chain output { type filter hook output priority 0; policy accept; ct state established,related,new accept; }
	chain forward { type filter hook forward priority 0; policy accept; ct state established,related,new accept; }
}`

// commandTimeout bounds one external command of the harness.
const commandTimeout = 2 * time.Minute

// CombinedOutput runs a command and returns its combined output; the
// error names the command and carries its output.
func CombinedOutput(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// RandomName returns prefix followed by 8 random hex digits, a name for a
// namespace or an interface that no one else uses.
func RandomName(prefix string) (string, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random name: %w", err)
	}
	return prefix + hex.EncodeToString(b[:]), nil
}

// Namespace is a named network namespace under /run/netns.
type Namespace struct {
	// Name is the name under /run/netns.
	Name string
	// Path is the namespace file, /run/netns/Name.
	Path string

	deleted bool
}

// Target returns the exporter's view of the namespace.
func (n *Namespace) Target() netns.Target {
	return netns.Target{Name: n.Name, Path: n.Path}
}

// CreateNamespace creates an empty network namespace named prefix plus
// random hex digits, with loopback up and, when track is set, conntrack
// switched on (TrackingRuleset). The caller removes it with Remove, also
// when CreateNamespace's later steps fail: then the returned namespace is
// non-nil together with the error.
func CreateNamespace(prefix string, track bool) (*Namespace, error) {
	name, err := RandomName(prefix)
	if err != nil {
		return nil, err
	}
	if _, err := CombinedOutput("ip", "netns", "add", name); err != nil {
		return nil, err
	}
	n := &Namespace{Name: name, Path: "/run/netns/" + name}
	if _, err := n.Output("ip", "link", "set", "lo", "up"); err != nil {
		return n, err
	}
	if track {
		if err := n.LoadRuleset(TrackingRuleset); err != nil {
			return n, err
		}
	}
	return n, nil
}

// Remove deletes the namespace. Removing it twice is not an error.
func (n *Namespace) Remove() error {
	if n.deleted {
		return nil
	}
	if _, err := CombinedOutput("ip", "netns", "del", n.Name); err != nil {
		if _, statErr := os.Stat(n.Path); errors.Is(statErr, os.ErrNotExist) {
			n.deleted = true
			return nil
		}
		return err
	}
	n.deleted = true
	return nil
}

// Command returns a command that runs inside the namespace
// (ip netns exec NAME name args...).
func (n *Namespace) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Output runs a command inside the namespace and returns its combined
// output.
func (n *Namespace) Output(name string, args ...string) (string, error) {
	return CombinedOutput("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// LoadRuleset loads an nftables ruleset in the namespace.
func (n *Namespace) LoadRuleset(ruleset string) error {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := n.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s", n.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// SetSysctl sets a per-namespace sysctl (for example
// net.netfilter.nf_conntrack_tcp_timeout_established) inside the
// namespace. It refuses keys that are global to the machine, so that a
// drill cannot change the host by mistake.
func (n *Namespace) SetSysctl(key, value string) error {
	if GlobalSysctl(key) {
		return fmt.Errorf("sysctl %s is global to the machine, not per namespace", key)
	}
	if _, err := n.Output("sysctl", "-q", "-w", key+"="+value); err != nil {
		return fmt.Errorf("netns %s: %w", n.Name, err)
	}
	return nil
}

// GlobalSysctl reports whether a sysctl key is one value for the whole
// machine even when written from inside a network namespace.
func GlobalSysctl(key string) bool {
	switch strings.ReplaceAll(key, "/", ".") {
	case "net.netfilter.nf_conntrack_max", "net.nf_conntrack_max",
		"net.netfilter.nf_conntrack_buckets", "net.netfilter.nf_conntrack_expect_max":
		return true
	}
	return false
}

// ReadSysctl reads a sysctl as seen from inside the namespace.
func (n *Namespace) ReadSysctl(key string) (string, error) {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	var value string
	err := n.Target().Do(func() error {
		b, err := os.ReadFile(path)
		value = strings.TrimSpace(string(b))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("netns %s: read %s: %w", n.Name, key, err)
	}
	return value, nil
}

// ReadFile reads a file from a thread inside the namespace; use it for
// the namespace's view of /proc/thread-self/net.
func (n *Namespace) ReadFile(path string) ([]byte, error) {
	var b []byte
	err := n.Target().Do(func() error {
		var err error
		b, err = os.ReadFile(path)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", n.Name, err)
	}
	return b, nil
}

// LinkPair joins two namespaces with a veth pair and gives each end an
// address.
func LinkPair(a *Namespace, aCIDR string, b *Namespace, bCIDR string) error {
	va, err := RandomName("va")
	if err != nil {
		return err
	}
	vb := "vb" + strings.TrimPrefix(va, "va")
	steps := [][]string{
		{"ip", "link", "add", va, "netns", a.Name, "type", "veth", "peer", "name", vb, "netns", b.Name},
		{"ip", "netns", "exec", a.Name, "ip", "addr", "add", aCIDR, "dev", va},
		{"ip", "netns", "exec", b.Name, "ip", "addr", "add", bCIDR, "dev", vb},
		{"ip", "netns", "exec", a.Name, "ip", "link", "set", va, "up"},
		{"ip", "netns", "exec", b.Name, "ip", "link", "set", vb, "up"},
	}
	for _, s := range steps {
		if _, err := CombinedOutput(s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// EntryCount returns conntrack -C in the namespace.
func (n *Namespace) EntryCount() (int, error) {
	out, err := n.Output("conntrack", "-C")
	if err != nil {
		return 0, err
	}
	c, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		return 0, fmt.Errorf("conntrack -C in %s: %q: %w", n.Name, out, err)
	}
	return c, nil
}

// CounterSums sums the per-CPU counters of conntrack -S in the namespace,
// by the tool's field names (insert, drop, early_drop, ...).
func (n *Namespace) CounterSums() (map[string]uint64, error) {
	out, err := n.Output("conntrack", "-S")
	if err != nil {
		return nil, err
	}
	sums := map[string]uint64{}
	for _, line := range strings.Split(out, "\n") {
		for _, field := range strings.Fields(line) {
			k, v, ok := strings.Cut(field, "=")
			if !ok || k == "cpu" {
				continue
			}
			x, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("conntrack -S in %s: field %q: %w", n.Name, field, err)
			}
			sums[k] += x
		}
	}
	return sums, nil
}

// ctnetlinkSocket opens a ctnetlink socket inside the namespace.
func (n *Namespace) ctnetlinkSocket() (int, error) {
	return ctnetlinkSocket(n.Target())
}

// ctnetlinkSocket opens a bound ctnetlink socket inside the target
// namespace.
func ctnetlinkSocket(target netns.Target) (int, error) {
	fd := -1
	err := target.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	})
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		return -1, fmt.Errorf("ctnetlink socket in %s: %w", target, err)
	}
	return fd, nil
}

// Insert creates the entries in the namespace's table over ctnetlink, 256
// requests to a datagram: created is how many the kernel accepted, refused
// the first error it returned for the others (nil when it accepted all).
// Entries with Assured set are created ASSURED in the same request, so
// that neither early_drop nor the garbage collector of a nearly full table
// evicts them first. err reports a failure of the socket.
func (n *Namespace) Insert(entries []Entry) (created int, refused, err error) {
	fd, err := n.ctnetlinkSocket()
	if err != nil {
		return 0, nil, err
	}
	defer unix.Close(fd)
	ok, refused, err := requestBatches(fd, entries, createMessage)
	if err != nil {
		return 0, nil, fmt.Errorf("netns %s: create entries: %w", n.Name, err)
	}
	for _, good := range ok {
		if good {
			created++
		}
	}
	return created, refused, nil
}

// RemoveEntries deletes the entries from the namespace's table over ctnetlink,
// one IPCTNL_MSG_CT_DELETE request each; every deletion of an entry with
// the event extension sends one DESTROY event. deleted is how many the
// kernel removed, refused the first error it returned for the others.
func (n *Namespace) RemoveEntries(entries []Entry) (deleted int, refused, err error) {
	fd, err := n.ctnetlinkSocket()
	if err != nil {
		return 0, nil, err
	}
	defer unix.Close(fd)
	ok, refused, err := requestBatches(fd, entries, deleteMessage)
	if err != nil {
		return 0, nil, fmt.Errorf("netns %s: delete entries: %w", n.Name, err)
	}
	for _, good := range ok {
		if good {
			deleted++
		}
	}
	return deleted, refused, nil
}

// Flush removes every entry of the namespace's table with one
// IPCTNL_MSG_CT_DELETE request without a tuple, as conntrack -F does.
func (n *Namespace) Flush() error {
	fd, err := n.ctnetlinkSocket()
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	_, refused, err := requestBatches(fd, []Entry{{}}, func(Entry, uint32) []byte {
		return request(msgCTDelete, unix.NLM_F_REQUEST|unix.NLM_F_ACK, 1, unix.AF_UNSPEC, nil)
	})
	if err == nil {
		err = refused
	}
	if err != nil {
		return fmt.Errorf("netns %s: flush: %w", n.Name, err)
	}
	return nil
}

// msgCTDelete is NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE.
const msgCTDelete = 1<<8 | 2

// deleteMessage encodes the IPCTNL_MSG_CT_DELETE request of one entry,
// found by its original tuple.
func deleteMessage(e Entry, seq uint32) []byte {
	family := byte(unix.AF_INET)
	if e.Src.Is6() {
		family = unix.AF_INET6
	}
	var a attrBuf
	a = a.nested(ctaTupleOrig, tuple(e.Proto, e.Src, e.Dst, e.SPort, e.DPort))
	return request(msgCTDelete, unix.NLM_F_REQUEST|unix.NLM_F_ACK, seq, family, a)
}

// request frames one ctnetlink request: netlink header, nfgenmsg,
// attributes.
func request(typ, flags uint16, seq uint32, family byte, attrs []byte) []byte {
	msg := make([]byte, 16, 16+4+len(attrs))
	binary.NativeEndian.PutUint32(msg[0:], uint32(16+4+len(attrs)))
	binary.NativeEndian.PutUint16(msg[4:], typ)
	binary.NativeEndian.PutUint16(msg[6:], flags)
	binary.NativeEndian.PutUint32(msg[8:], seq)
	msg = append(msg, family, 0, 0, 0)
	return append(msg, attrs...)
}

// requestBatches sends one request per entry, 256 to a datagram, and
// reads the acknowledgement of each. ok[i] tells whether the kernel
// accepted entry i; refused is the first error it returned; err is a
// failure of the socket or of the replies.
func requestBatches(fd int, entries []Entry, encode func(Entry, uint32) []byte) (ok []bool, refused, err error) {
	const batch = 256
	ok = make([]bool, len(entries))
	buf := make([]byte, 1<<16)
	out := make([]byte, 0, 1<<16)
	for start := 0; start < len(entries); start += batch {
		end := min(start+batch, len(entries))
		out = out[:0]
		for i := start; i < end; i++ {
			out = append(out, encode(entries[i], uint32(i+1))...)
		}
		if err := unix.Sendto(fd, out, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return ok, refused, fmt.Errorf("ctnetlink send: %w", err)
		}
		for acks := 0; acks < end-start; {
			nr, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				return ok, refused, fmt.Errorf("ctnetlink receive: %w", err)
			}
			err = ctnl.ForEachMessage(buf[:nr], func(h ctnl.Header, data []byte) error {
				if h.Type != unix.NLMSG_ERROR {
					return nil
				}
				acks++
				errno, err := ctnl.ErrnoFromError(data)
				if err != nil {
					return err
				}
				i := int(h.Sequence) - 1
				if i < start || i >= end {
					return fmt.Errorf("ack for unknown sequence %d", h.Sequence)
				}
				if errno == 0 {
					ok[i] = true
				} else if refused == nil {
					refused = fmt.Errorf("entry %d: %w", i, errno)
				}
				return nil
			})
			if err != nil {
				return ok, refused, fmt.Errorf("ctnetlink ack: %w", err)
			}
		}
	}
	return ok, refused, nil
}
