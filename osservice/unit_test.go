package osservice

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the packaged systemd units in packaging/systemd")

func packagedConfig() Config {
	return Config{
		Name:       DefaultName,
		ConfigPath: "/etc/postern/postern.toml",
		Executable: "/usr/bin/postern",
		Watchdog:   DefaultWatchdog,
	}
}

// The units the packages ship are what Unit renders, so the installed and
// the packaged service cannot drift apart. go test ./osservice -update
// rewrites them.
func TestPackagedUnits(t *testing.T) {
	unit, err := Unit(packagedConfig())
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"postern.service":  unit,
		"postern@.service": TemplateUnit("/usr/bin/postern"),
	}
	for name, want := range files {
		path := filepath.Join("..", "packaging", "systemd", name)
		if *update {
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (go test ./osservice -update writes it)", err)
		}
		if string(got) != want {
			t.Errorf("%s differs from what Unit renders; run go test ./osservice -update and review the diff", path)
		}
	}
}

func TestUnitContents(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*Config)
		want    []string
		notWant []string
	}{
		{
			name: "default",
			edit: func(*Config) {},
			want: []string{
				"Type=notify\n",
				"ExecStart=/usr/bin/postern run -c /etc/postern/postern.toml --service postern\n",
				"ExecReload=/bin/kill -HUP $MAINPID\n",
				"Restart=on-failure\n",
				"RestartSec=2s\n",
				"WatchdogSec=30s\n",
				"User=postern\n",
				"NoNewPrivileges=yes\n",
				"ProtectSystem=strict\n",
				"ProtectHome=yes\n",
				"PrivateTmp=yes\n",
				"RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n",
				"SystemCallFilter=@system-service\n",
				"\nCapabilityBoundingSet=\n",
				"\nAmbientCapabilities=\n",
				"WantedBy=multi-user.target\n",
			},
			notWant: []string{"CAP_NET_BIND_SERVICE\n", "{{"},
		},
		{
			name: "low ports keep only CAP_NET_BIND_SERVICE",
			edit: func(c *Config) { c.LowPorts = true },
			want: []string{
				"\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\n",
				"\nAmbientCapabilities=CAP_NET_BIND_SERVICE\n",
			},
			notWant: []string{"PrivateUsers=yes"}, // a private user namespace would void the capability
		},
		{
			name:    "the stop timeout follows shutdown_timeout",
			edit:    func(c *Config) { c.ShutdownTimeout = 2 * time.Minute },
			want:    []string{"TimeoutStopSec=135s\n", "shutdown_timeout (120s)"},
			notWant: []string{"TimeoutStopSec=45s"},
		},
		{
			name: "the default shutdown_timeout",
			edit: func(c *Config) { c.ShutdownTimeout = 0 },
			want: []string{"TimeoutStopSec=45s\n", "shutdown_timeout (30s)"},
		},
		{
			name:    "watchdog off",
			edit:    func(c *Config) { c.Watchdog = 0 },
			notWant: []string{"WatchdogSec"},
		},
		{
			name: "watchdog in milliseconds",
			edit: func(c *Config) { c.Watchdog = 1500 * time.Millisecond },
			want: []string{"WatchdogSec=1500ms\n"},
		},
		{
			name: "instance name and user",
			edit: func(c *Config) { c.Name, c.User = "partner-a", "tunnel" },
			want: []string{
				"Description=Postern tunnel (partner-a)\n",
				"--service partner-a\n",
				"User=tunnel\nGroup=tunnel\n",
			},
		},
		{
			name: "paths with spaces, quotes, percent and dollar are quoted and escaped",
			edit: func(c *Config) {
				c.Executable = "/opt/my tools/postern"
				c.ConfigPath = `/etc/postern/100% "real" $HOME.toml`
			},
			want: []string{`ExecStart="/opt/my tools/postern" run -c "/etc/postern/100%% \"real\" $$HOME.toml" --service postern` + "\n"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := packagedConfig()
			tt.edit(&c)
			unit, err := Unit(c)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(unit, w) {
					t.Errorf("unit lacks %q:\n%s", w, unit)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(unit, w) {
					t.Errorf("unit has %q:\n%s", w, unit)
				}
			}
		})
	}
}

func TestTemplateUnitKeepsSpecifiers(t *testing.T) {
	u := TemplateUnit("/usr/bin/postern")
	for _, w := range []string{
		"Description=Postern tunnel (%i)\n",
		"ExecStart=/usr/bin/postern run -c /etc/postern/%i.toml --service postern@%i\n",
	} {
		if !strings.Contains(u, w) {
			t.Errorf("template unit lacks %q:\n%s", w, u)
		}
	}
}

func TestUnitRejects(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"empty name", func(c *Config) { c.Name = "" }, `service name "": use 1 to 64 letters`},
		{"name with a slash", func(c *Config) { c.Name = "a/b" }, `service name "a/b"`},
		{"name with a template @", func(c *Config) { c.Name = "postern@x" }, `service name "postern@x"`},
		{"relative config", func(c *Config) { c.ConfigPath = "postern.toml" }, `config path "postern.toml" is not absolute`},
		{"relative binary", func(c *Config) { c.Executable = "postern" }, `executable "postern" is not absolute`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := packagedConfig()
			tt.edit(&c)
			_, err := Unit(c)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}
