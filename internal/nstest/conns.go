package nstest

import (
	"io"
	"net"
	"testing"
	"time"
)

// DialFrom opens a TCP connection from the local address from to addr
// inside the namespace, without keepalive probes (an idle connection stays
// idle, so conntrack can expire it while ESTABLISHED). The connection is
// closed when the test ends.
func (n *Namespace) DialFrom(t testing.TB, from, addr string) *net.TCPConn {
	t.Helper()
	var c net.Conn
	err := n.Target().Do(func() error {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, KeepAlive: -1}
		var err error
		c, err = d.Dial("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, from, err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// CloseAfterPeer accepts connections on l until it is closed, and closes
// each once its peer has: an orderly FIN in both directions.
func CloseAfterPeer(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			io.Copy(io.Discard, c)
			c.Close()
		}()
	}
}

// HoldIdle accepts connections on l until it is closed and keeps them open
// and idle, without keepalive probes, until the test ends.
func HoldIdle(t testing.TB, l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.(*net.TCPConn).SetKeepAlive(false)
		t.Cleanup(func() { c.Close() })
	}
}
