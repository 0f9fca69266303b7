// Command workload is the program live-move tests and benchmarks run inside
// a container (it is built static, so it runs in a busybox image). It holds
// touched memory with a known checksum, keeps a counter in memory that it
// appends with a timestamp to a log file (held open) every 100 ms, and
// watches a 10 ms ticker for the longest gap, which is the downtime seen
// from inside the container.
//
// Writing "report" into the control file makes it write a status line
// (counter, memory checksum now and at start, longest gap) to the status
// file; "reset" forgets the longest gap so far.
//
// With -udp-echo ADDR it does nothing but answer each UDP datagram with
// its own bytes (the udp proxy device's test).
//
// With -serve PORT it also accepts TCP connections and sends each one an
// 8-byte big-endian sequence number every 5 ms; with -connect HOST:PORT it
// reads such a stream and checks that every number follows the one before,
// so a connection that survives a live move of either end shows as one
// unbroken sequence. The status line then carries the stream's state
// (stream=ok or the first error), the last number read and the longest
// stall between two numbers.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// stream is what the -connect side has seen.
type stream struct {
	mu       sync.Mutex
	err      string
	seq      uint64
	maxStall time.Duration
}

func (s *stream) status() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	state := "ok"
	if s.err != "" {
		state = strings.ReplaceAll(s.err, " ", "_")
	}
	return fmt.Sprintf(" stream=%s stream_seq=%d stream_maxstall_ms=%d", state, s.seq, s.maxStall.Milliseconds())
}

func (s *stream) fail(err string) {
	s.mu.Lock()
	if s.err == "" {
		s.err = err
	}
	s.mu.Unlock()
}

// serve sends every connection an increasing sequence, one number per 5 ms.
func serve(port string) {
	// Plain TCP: Go listens with MPTCP by default, which CRIU cannot dump
	// ("Unsupported proto 262").
	lc := net.ListenConfig{}
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", ":"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			continue
		}
		go func() {
			defer c.Close()
			var b [8]byte
			for seq := uint64(1); ; seq++ {
				binary.BigEndian.PutUint64(b[:], seq)
				if _, err := c.Write(b[:]); err != nil {
					fmt.Fprintf(os.Stderr, "%s serve: seq %d: %v\n", time.Now().Format(time.StampMilli), seq, err)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
}

// follow reads a served sequence and records breaks and the longest stall.
func follow(addr string, s *stream) {
	var c net.Conn
	var err error
	for range 100 { // the server may still be starting
		d := net.Dialer{Timeout: 2 * time.Second}
		d.SetMultipathTCP(false)
		if c, err = d.Dial("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		s.fail("dial: " + err.Error())
		return
	}
	var b [8]byte
	last := time.Now().Round(0)
	for {
		if _, err := io.ReadFull(c, b[:]); err != nil {
			fmt.Fprintf(os.Stderr, "%s follow: after seq %d: %v\n", time.Now().Format(time.StampMilli), s.seq, err)
			s.fail("read: " + err.Error())
			return
		}
		now := time.Now().Round(0)
		seq := binary.BigEndian.Uint64(b[:])
		s.mu.Lock()
		if seq != s.seq+1 {
			if s.err == "" {
				s.err = fmt.Sprintf("sequence jumped from %d to %d", s.seq, seq)
			}
		}
		s.seq = seq
		if stall := now.Sub(last); stall > s.maxStall {
			s.maxStall = stall
		}
		s.mu.Unlock()
		last = now
	}
}

func main() {
	memMiB := flag.Int("mem", 0, "MiB of memory to hold, touched")
	dir := flag.String("dir", "/root", "directory of the log, control and status files")
	servePort := flag.String("serve", "", "PORT: send each TCP connection a sequence number every 5 ms")
	connect := flag.String("connect", "", "HOST:PORT: read a -serve stream and check it stays unbroken")
	udpEcho := flag.String("udp-echo", "", "ADDR: only answer each UDP datagram to ADDR with the same bytes")
	flag.Parse()
	if *udpEcho != "" {
		if err := echoUDP(*udpEcho); err != nil {
			fmt.Fprintln(os.Stderr, "workload:", err)
			os.Exit(1)
		}
		return
	}
	if *servePort != "" {
		go serve(*servePort)
	}
	var st *stream
	if *connect != "" {
		st = &stream{}
		go follow(*connect, st)
	}

	mem := make([]byte, *memMiB<<20)
	x := uint64(88172645463325252)
	for i := 0; i+8 <= len(mem); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		for j := 0; j < 8; j++ {
			mem[i+j] = byte(x >> (8 * j))
		}
	}
	sum := func() string { s := sha256.Sum256(mem); return hex.EncodeToString(s[:]) }
	startSum := sum()

	log, err := os.OpenFile(*dir+"/ticks", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctl, status := *dir+"/control", *dir+"/status"
	var counter int64
	var maxGap time.Duration
	// Wall-clock time (Round(0) drops the monotonic reading): a restored
	// process's monotonic clock is shifted by CRIU's time namespace so that
	// it does not see the time it spent frozen, but the wall clock does.
	last := time.Now().Round(0)
	tick := time.NewTicker(10 * time.Millisecond)
	for n := 1; ; n++ {
		<-tick.C
		now := time.Now().Round(0)
		if gap := now.Sub(last); gap > maxGap {
			maxGap = gap
		}
		last = now
		if n%10 != 0 {
			continue
		}
		counter++
		fmt.Fprintf(log, "%d %d\n", counter, now.UnixMilli())
		b, err := os.ReadFile(ctl)
		if err != nil {
			continue
		}
		os.Remove(ctl)
		switch strings.TrimSpace(string(b)) {
		case "reset":
			maxGap = 0
			if st != nil {
				st.mu.Lock()
				st.maxStall = 0
				st.mu.Unlock()
			}
		case "report":
			line := fmt.Sprintf("counter=%d sum=%s start=%s maxgap_ms=%d", counter, sum(), startSum, maxGap.Milliseconds())
			if st != nil {
				line += st.status()
			}
			line += "\n"
			os.WriteFile(status+".tmp", []byte(line), 0o644)
			os.Rename(status+".tmp", status)
		}
		last = time.Now().Round(0)
	}
}

// echoUDP sends every datagram to addr back to where it came from.
func echoUDP(addr string) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		if _, err := pc.WriteTo(buf[:n], from); err != nil {
			return err
		}
	}
}
