package deviceimport_test

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/fleetrelay/fleetrelay/internal/deviceimport"
)

// rows reads in and returns each row as "line id custom1/custom2/custom3 tags groups imei
// account named:<the custom fields named, as 1, 2, 3>" or "line id !error".
func rows(t *testing.T, in io.Reader, o deviceimport.Options) ([]string, error) {
	t.Helper()
	var out []string
	err := deviceimport.Read(in, o, func(r deviceimport.Row) error {
		if r.Err != nil {
			out = append(out, strings.TrimSpace(fmt.Sprintf("%d %s", r.Line, r.Device.ID))+" !"+r.Err.Error())
			return nil
		}
		d := r.Device
		named := ""
		for i, n := range r.Named {
			if n {
				named += fmt.Sprint(i + 1)
			}
		}
		out = append(out, fmt.Sprintf("%d %s %s/%s/%s %v %v %s %s named:%s", r.Line, d.ID, d.Custom1, d.Custom2, d.Custom3, d.Tags, d.Groups, d.IMEI, d.Account, named))
		return nil
	})
	return out, err
}

func TestRead(t *testing.T) {
	f := func(o deviceimport.Options, in string, want ...string) {
		t.Helper()
		got, err := rows(t, strings.NewReader(in), o)
		if err != nil {
			t.Fatalf("Read(%q) = %v", in, err)
		}
		if len(got) != len(want) {
			t.Fatalf("Read(%q) = %q, want %q", in, got, want)
		}
		for i := range want {
			if !strings.HasPrefix(got[i], want[i]) {
				t.Errorf("Read(%q) row %d = %q, want %q…", in, i, got[i], want[i])
			}
		}
	}
	nd := deviceimport.Options{Format: deviceimport.NDJSON}
	f(nd, `{"id":"a","tags":["x"],"imei":"356938035643809","account":"acme"}`+"\r\n\n"+`  {"id":"b","tags":[]}`,
		"1 a // [x] [] 356938035643809 acme", "3 b // [] []")
	f(nd, `{"id":"a","x":1}`+"\n"+`[1]`+"\n"+`{"id":"c","tags":"t"}`+"\n"+`{"id":"d"}{}`,
		`1 a !not a device object: json: unknown field "x"`, "2 !not a device object", "3 c !/tags: want []string", "4 d !not a device object: more than one JSON value")
	// The custom fields a row names (a secret one it does not name keeps its value), null too.
	f(nd, `{"id":"a","custom1":"k","custom3":null}`+"\n"+`{"id":"b","custom2":""}`+"\n"+`{"id":"c"}`+"\n"+`{"id":"d","custom1":5}`,
		"1 a k// [] []   named:13", "2 b // [] []   named:2", "3 c // [] []   named:", "4 d !/custom1: want string")
	f(nd, "")
	f(nd, "\n\n")
	f(nd, strings.Repeat(" ", deviceimport.MaxLine+10)+"x\n"+`{"id":"after"}`, "1 !line longer than", "2 after")

	csv := deviceimport.Options{Format: deviceimport.CSV}
	f(csv, "\uFEFFID, Tags ,groups,custom3\na,x;y; ;z,g,\" k \"\n\nb,,,\n", "2 a // k  [x y z] [g]", "4 b // [] []")
	f(csv, "id,imei\na\n\"b\nc\",1\nd,\"x\"y\n", "2 !1 fields, the header names 2", "3 b\nc // [] [] 1", "5 !csv:")
	f(csv, "id\n")
	f(csv, "id,custom1,custom2\na,k,\nb,,x\n", "2 a k// [] []   named:1", "3 b /x/ [] []   named:2")

	az := deviceimport.Options{Format: deviceimport.Azure, KeyField: "custom2"}
	f(az, `{"deviceId":"h1","etag":"x","authentication":{"symmetricKey":{"primaryKey":"k1","secondaryKey":"k2"},"type":"sas"},"tags":{"a":1}}`+"\n"+
		`{"deviceId":"h2","authentication":{"type":"certificateAuthority"}}`+"\n"+`{"authentication":{}}`+"\n"+`nope`,
		"1 h1 /k1/ [] []", `2 h2 !no authentication.symmetricKey.primaryKey (authentication type "certificateAuthority")`, "3 !no deviceId", "4 !not a device object")
	f(deviceimport.Options{Format: deviceimport.Azure}, `{"deviceId":"h1","authentication":{"symmetricKey":{"primaryKey":"k1"}}}`, "1 h1 k1// [] []   named:1")
	f(az, `{"deviceId":"h1","authentication":{"symmetricKey":{"primaryKey":"k1"}}}`, "1 h1 /k1/ [] []   named:2")
}

func TestReadInputErrors(t *testing.T) {
	for _, c := range []struct {
		o  deviceimport.Options
		in string
	}{
		{deviceimport.Options{Format: "xml"}, ""},
		{deviceimport.Options{Format: deviceimport.Azure, KeyField: "imei"}, ""},
		{deviceimport.Options{Format: deviceimport.CSV}, ""},
		{deviceimport.Options{Format: deviceimport.CSV}, "id,colour\n"},
		{deviceimport.Options{Format: deviceimport.CSV}, "imei\n"},
		{deviceimport.Options{Format: deviceimport.CSV}, "id,tags,ID\n"},
		{deviceimport.Options{Format: deviceimport.CSV}, "id,\"x\n"},
	} {
		if _, err := rows(t, strings.NewReader(c.in), c.o); !errors.Is(err, deviceimport.ErrInput) {
			t.Errorf("Read(%+v, %q) = %v, want ErrInput", c.o, c.in, err)
		}
	}
	// fn's error stops the reading and is returned; so is the reader's.
	stop := errors.New("stop")
	n := 0
	err := deviceimport.Read(strings.NewReader("{\"id\":\"a\"}\n{\"id\":\"b\"}\n"), deviceimport.Options{Format: deviceimport.NDJSON},
		func(deviceimport.Row) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("Read with fn failing = %v after %d rows, want stop after 1", err, n)
	}
	if _, err := rows(t, iotest.TimeoutReader(strings.NewReader(strings.Repeat("{\"id\":\"a\"}\n", 10000))), deviceimport.Options{Format: deviceimport.NDJSON}); !errors.Is(err, iotest.ErrTimeout) {
		t.Errorf("Read of a failing reader = %v, want its error", err)
	}
}

// Any input, in any format: Read neither panics nor loops, its rows' lines rise, and the rows
// are the same when the input comes one byte at a time (as a slow client sends it).
func FuzzRead(f *testing.F) {
	seeds := []string{
		`{"id":"a","tags":["x"]}` + "\n" + `{"id":"b"}`,
		"id,tags\na,x;y\n\"b\nc\",\n",
		`{"deviceId":"h","authentication":{"symmetricKey":{"primaryKey":"k"}}}`,
		"\uFEFFid\n\"\"\"\",\n",
	}
	for _, s := range seeds {
		for i := range len(s) + 1 {
			f.Add(s[:i], uint8(i%3))
		}
	}
	f.Fuzz(func(t *testing.T, in string, format uint8) {
		o := deviceimport.Options{Format: deviceimport.Formats[int(format)%len(deviceimport.Formats)]}
		whole, err1 := rows(t, strings.NewReader(in), o)
		bytewise, err2 := rows(t, iotest.OneByteReader(strings.NewReader(in)), o)
		if !reflect.DeepEqual(whole, bytewise) || (err1 == nil) != (err2 == nil) {
			t.Fatalf("Read(%q) = %q, %v; byte by byte %q, %v", in, whole, err1, bytewise, err2)
		}
		last := 0
		for _, r := range whole {
			var line int
			fmt.Sscanf(r, "%d", &line)
			if line <= last {
				t.Fatalf("Read(%q): line %d after %d", in, line, last)
			}
			last = line
		}
	})
}

// Tokens: given ("" and null remove, absent keeps), too long or not a string rejected, never
// in an error; a CSV's empty token cell keeps the device's.
func TestReadTokens(t *testing.T) {
	f := func(o deviceimport.Options, in string, want ...string) {
		t.Helper()
		var got []string
		err := deviceimport.Read(strings.NewReader(in), o, func(r deviceimport.Row) error {
			switch {
			case r.Err != nil:
				got = append(got, "!"+r.Err.Error())
			case r.Token == nil:
				got = append(got, "keep")
			default:
				got = append(got, "="+*r.Token)
			}
			return nil
		})
		if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("Read(%.60q) = %q, %v; want %q", in, got, err, want)
		}
	}
	long := strings.Repeat("s", 256)
	f(deviceimport.Options{Format: deviceimport.NDJSON},
		`{"id":"a","token":"t1"}`+"\n"+`{"id":"a","token":null}`+"\n"+`{"id":"a","token":""}`+"\n"+`{"id":"a"}`+"\n"+`{"id":"a","token":7}`+"\n"+`{"id":"a","token":"`+long+`"}`,
		"=t1", "=", "=", "keep", "!/token: want a string, or null to remove it", "!/token: longer than 255 bytes")
	f(deviceimport.Options{Format: deviceimport.CSV}, "id,token\na,t2\nb,\nc,"+long+"\n", "=t2", "keep", "!/token: longer than 255 bytes")
}
