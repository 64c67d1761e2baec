package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// Node requests: one relay node asks another, by name, to do what only the node holding a
// device's connection can do. Core NATS request/reply (nothing kept in JetStream) on
// <prefix>.node.<name>.<request>, JSON bodies; a node that is gone answers "no responders" at
// once, which the asker reports as ErrNodeGone.

// Requests a node serves (the last tokens of their subjects).
const (
	reqLinkOpen  = "link.open"
	reqLinkClose = "link.close"
	reqPing      = "ping" // answered by the NodeServer itself: the node runs
)

// ErrNodeGone: no node of that name answers (it stopped, or never ran).
var ErrNodeGone = errors.New("cluster: the node does not answer")

// Codes of a node request's failure (LinkReply.Error), which the asking node maps back to the
// errors it would have had from a local link.
const (
	LinkNotConnected   = "not_connected"   // the node has no address for the device
	LinkDisabled       = "disabled"        // the node opens no device links
	LinkPortsExhausted = "ports_exhausted" // every port of the node's range holds a link
	LinkSourceBusy     = "source_busy"     // a link via the listener already carries the device's source
	LinkProtocolOff    = "protocol_off"    // the node opens no links of that protocol
	LinkClosed         = "closed"          // the node is stopping
	LinkNotFound       = "not_found"       // no link has that token
	LinkFailed         = "failed"          // anything else: Detail says what
)

// NewNodeName returns a name for this node's life when the config names none: the host's name
// (its letters, digits, - and _, at most 40) and a random suffix, unique among the nodes of a
// prefix and across restarts; a subject token.
func NewNodeName() string {
	host, _ := os.Hostname()
	b := make([]byte, 0, 40+1+22)
	for i := 0; i < len(host) && len(b) < 40; i++ {
		switch c := host[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
			b = append(b, c)
		case c == '.':
			i = len(host) // the host's own name, not its domain
		default:
			b = append(b, '-')
		}
	}
	if len(b) > 0 {
		b = append(b, '-')
	}
	return string(b) + nuid.Next() // unique per call: several relays may run in one process
}

// LinkRequest asks the node holding a device's connection for a link to it: the link's device
// leg, which the asking node's own link dials.
type LinkRequest struct {
	Device     string        `json:"device"` // upper case
	Account    string        `json:"account,omitempty"`
	Protocol   string        `json:"protocol"`
	Via        string        `json:"via,omitempty"`
	DevicePort uint16        `json:"devicePort,omitempty"` // not for via listener
	Timeout    time.Duration `json:"timeout,omitempty"`
	Token      string        `json:"token,omitempty"` // link.close: the link to close
	// From is the asking node's name: the node holding the device closes the link once From
	// is gone (Ping).
	From string `json:"from,omitempty"`
}

// LinkReply is the answer to a LinkRequest.
type LinkReply struct {
	Port       uint16 `json:"port,omitempty"`       // where the link takes its client, on Links
	Token      string `json:"token,omitempty"`      // closes it (link.close)
	Links      string `json:"links,omitempty"`      // the node's links address other nodes dial
	DeviceAddr string `json:"deviceAddr,omitempty"` // where the node reaches the device
	Error      string `json:"error,omitempty"`      // one of the Link* codes; "" success
	Detail     string `json:"detail,omitempty"`
}

// NodeHandlers are what a node answers other nodes with. Each is called on the node server's
// goroutine, one request at a time, and must answer promptly (the asker waits at most
// attemptTimeout).
type NodeHandlers struct {
	OpenLink  func(ctx context.Context, r LinkRequest) LinkReply
	CloseLink func(ctx context.Context, r LinkRequest) LinkReply
}

// NodeServer answers the node requests addressed to one node. Close stops it and waits for its
// goroutine.
type NodeServer struct {
	sub  *nats.Subscription
	msgs chan *nats.Msg
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func nodeSubject(prefix, node, req string) string { return prefix + ".node." + node + "." + req }

// ServeNode answers the requests to node (NewNodeName) with h, from one goroutine.
func (c *Conn) ServeNode(node string, h NodeHandlers) (*NodeServer, error) {
	s := &NodeServer{msgs: make(chan *nats.Msg, 64), stop: make(chan struct{}), done: make(chan struct{})}
	prefix := nodeSubject(c.opts.Prefix, node, "")
	sub, err := c.nc.ChanSubscribe(prefix+">", s.msgs)
	if err != nil {
		return nil, fmt.Errorf("cluster: serve node %s: %w", node, err)
	}
	if err := c.nc.Flush(); err != nil { // the server has the subscription before anyone is told the name
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("cluster: serve node %s: %w", node, err)
	}
	s.sub = sub
	log := c.log.With("node", node)
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stop:
				return
			case m := <-s.msgs:
				s.answer(m, strings.TrimPrefix(m.Subject, prefix), h, log)
			}
		}
	}()
	return s, nil
}

func (s *NodeServer) answer(m *nats.Msg, what string, h NodeHandlers, log *slog.Logger) {
	var req LinkRequest
	var rep LinkReply
	ctx, cancel := context.WithTimeout(context.Background(), attemptTimeout)
	defer cancel()
	switch err := json.Unmarshal(m.Data, &req); {
	case err != nil:
		rep = LinkReply{Error: LinkFailed, Detail: "bad request: " + err.Error()}
	case what == reqPing:
	case what == reqLinkOpen && h.OpenLink != nil:
		rep = h.OpenLink(ctx, req)
	case what == reqLinkClose && h.CloseLink != nil:
		rep = h.CloseLink(ctx, req)
	default:
		rep = LinkReply{Error: LinkFailed, Detail: "unknown node request " + what}
	}
	b, _ := json.Marshal(rep)
	if m.Reply == "" {
		return
	}
	if err := m.Respond(b); err != nil {
		log.Warn("node request not answered", "request", what, "err", err)
	}
}

// Close stops answering and waits for the request being answered.
func (s *NodeServer) Close() error {
	s.once.Do(func() {
		_ = s.sub.Unsubscribe()
		close(s.stop)
	})
	<-s.done
	return nil
}

// OpenLink asks node for a link (LinkRequest) and returns its answer; ErrNodeGone if no node of
// that name answers.
func (c *Conn) OpenLink(ctx context.Context, node string, r LinkRequest) (LinkReply, error) {
	return c.nodeRequest(ctx, node, reqLinkOpen, r)
}

// CloseLink asks node to close its link r.Token.
func (c *Conn) CloseLink(ctx context.Context, node string, r LinkRequest) (LinkReply, error) {
	return c.nodeRequest(ctx, node, reqLinkClose, r)
}

// Ping returns nil if node runs, ErrNodeGone if no node of that name answers.
func (c *Conn) Ping(ctx context.Context, node string) error {
	_, err := c.nodeRequest(ctx, node, reqPing, LinkRequest{})
	return err
}

func (c *Conn) nodeRequest(ctx context.Context, node, what string, r LinkRequest) (LinkReply, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return LinkReply{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	m, err := c.nc.RequestWithContext(ctx, nodeSubject(c.opts.Prefix, node, what), b)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return LinkReply{}, fmt.Errorf("node %s: %w", node, ErrNodeGone)
	case err != nil:
		return LinkReply{}, fmt.Errorf("cluster: node %s %s: %w", node, what, err)
	}
	var rep LinkReply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		return LinkReply{}, fmt.Errorf("cluster: node %s %s: answer: %w", node, what, err)
	}
	return rep, nil
}
