package ipam

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
)

func TestPoolAllocatesLowestFree(t *testing.T) {
	p, err := NewPool("10.42.0.1/29") // .0 network, .1 gateway, .2–.6, .7 broadcast
	if err != nil {
		t.Fatal(err)
	}
	if p.Size() != 5 {
		t.Fatalf("Size = %d, want 5", p.Size())
	}
	used := map[string]bool{}
	isUsed := func(ip net.IP) bool { return used[ip.String()] }
	var got []string
	for range 5 {
		ip, err := p.Next(isUsed)
		if err != nil {
			t.Fatal(err)
		}
		used[ip.String()] = true
		got = append(got, ip.String())
	}
	if want := "[10.42.0.2 10.42.0.3 10.42.0.4 10.42.0.5 10.42.0.6]"; fmt.Sprint(got) != want {
		t.Fatalf("allocated %v, want %s", got, want)
	}
	if _, err := p.Next(isUsed); !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "all 5 addresses of 10.42.0.1/29") {
		t.Fatalf("Next on a full pool = %v, want ErrExhausted naming the network", err)
	}
	// A released address is the next one given.
	delete(used, "10.42.0.4")
	if ip, _ := p.Next(isUsed); ip.String() != "10.42.0.4" {
		t.Fatalf("after releasing .4, Next = %s", ip)
	}
	// A gateway in the middle of the range is skipped.
	mid, _ := NewPool("10.0.0.3/29")
	if ip, _ := mid.Next(func(ip net.IP) bool { return ip.String() == "10.0.0.1" || ip.String() == "10.0.0.2" }); ip.String() != "10.0.0.4" {
		t.Fatalf("Next skipping the gateway .3 = %s, want 10.0.0.4", ip)
	}
}

func TestPoolCheck(t *testing.T) {
	p, _ := NewPool("10.42.0.1/24")
	for _, tc := range []struct {
		ip   string
		want error
	}{
		{"10.42.0.2", nil}, {"10.42.0.254", nil},
		{"10.42.0.1", ErrOutOfRange}, {"10.42.0.0", ErrOutOfRange}, {"10.42.0.255", ErrOutOfRange},
		{"10.43.0.5", ErrOutOfRange}, {"2001:db8::1", ErrInvalid},
	} {
		if err := p.Check(net.ParseIP(tc.ip)); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("Check(%s) = %v, want %v", tc.ip, err, tc.want)
		}
	}
	if !p.Contains(net.ParseIP("10.42.0.255")) || p.Contains(net.ParseIP("10.42.1.0")) {
		t.Error("Contains is wrong at the subnet's edges")
	}
}

func TestNewPoolRefuses(t *testing.T) {
	for _, cidr := range []string{"", "10.0.0.1", "10.0.0.0/24", "10.0.0.255/24", "10.0.0.1/31", "10.0.0.1/7", "2001:db8::1/64"} {
		if _, err := NewPool(cidr); !errors.Is(err, ErrInvalid) {
			t.Errorf("NewPool(%q) = %v, want ErrInvalid", cidr, err)
		}
	}
}

// TestNextFreeAgreesWithNext: the bitmap search gives what the plain scan
// gives, for random sets of used addresses, gateway anywhere.
func TestNextFreeAgreesWithNext(t *testing.T) {
	for _, cidr := range []string{"10.42.0.1/22", "10.42.1.77/22", "10.9.0.254/24", "10.1.0.1/29"} {
		p, err := NewPool(cidr)
		if err != nil {
			t.Fatal(err)
		}
		var u Used
		used := map[string]bool{}
		for step := range 3000 {
			want, wantErr := p.Next(func(ip net.IP) bool { return used[ip.String()] })
			got, gotErr := p.NextFree(&u, nil)
			if (wantErr == nil) != (gotErr == nil) || (wantErr == nil && !got.Equal(want)) {
				t.Fatalf("%s step %d: NextFree = %v, %v; Next = %v, %v", cidr, step, got, gotErr, want, wantErr)
			}
			if wantErr != nil {
				break
			}
			p.Add(&u, want)
			used[want.String()] = true
			if step%3 == 0 { // free an earlier one now and then
				for k := range used {
					p.Remove(&u, net.ParseIP(k))
					delete(used, k)
					break
				}
			}
			if !p.Has(&u, want) && used[want.String()] {
				t.Fatalf("Has(%s) false after Add", want)
			}
		}
	}
}
