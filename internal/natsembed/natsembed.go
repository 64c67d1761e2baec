// Package natsembed owns the NATS server a relay may run inside its own process so that one
// machine can try cluster mode without installing NATS (fleetrelay -nats-embedded ADDR): one
// nats-server node with JetStream on file storage, fsyncing every write, its store in a
// directory of the relay's data_dir. It is one node: it survives nothing a real three-node
// NATS cluster would, and relays using it share one point of failure.
package natsembed

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// readyTimeout bounds the server's start.
const readyTimeout = 30 * time.Second

// Server is a running embedded NATS server.
type Server struct {
	srv *server.Server
	url string
}

// Start runs a NATS server with JetStream listening on addr (host:port) and keeping its streams
// in dir. It returns once the server takes connections.
func Start(addr, dir string, log *slog.Logger) (*Server, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("nats-embedded %q: %w", addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return nil, fmt.Errorf("nats-embedded %q: bad port", addr)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	o := &server.Options{
		ServerName: "fleetrelay-embedded",
		Host:       host,
		Port:       p,
		JetStream:  true,
		StoreDir:   dir,
		// Every write fsynced before it is acknowledged (nats-server's default syncs every two
		// minutes; README "Cluster mode", durability).
		SyncAlways: true,
		NoSigs:     true,
		NoLog:      true,
	}
	s, err := server.NewServer(o)
	if err != nil {
		return nil, fmt.Errorf("nats-embedded: %w", err)
	}
	s.Start()
	if !s.ReadyForConnections(readyTimeout) {
		s.Shutdown()
		return nil, fmt.Errorf("nats-embedded: not ready for connections on %s after %s", addr, readyTimeout)
	}
	a := s.Addr().(*net.TCPAddr)
	u := (&url.URL{Scheme: "nats", Host: net.JoinHostPort(host, strconv.Itoa(a.Port))}).String()
	if log != nil {
		log.Info("embedded NATS server with JetStream", "url", u, "store", dir)
	}
	return &Server{srv: s, url: u}, nil
}

// URL is the server's client URL (nats://host:port).
func (s *Server) URL() string { return s.url }

// Shutdown stops the server and waits until it is down.
func (s *Server) Shutdown() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}
