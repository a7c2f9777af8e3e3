package artifacts_test

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ct-exporter/ct-exporter/internal/nstest"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"golang.org/x/sys/unix"
)

// stage is one FROM ... section of the Dockerfile.
type stage struct {
	name  string
	image string // after expansion of the global ARGs
	flags []string
	nodes []*parser.Node // instructions after FROM
}

// dockerfile is the parsed Dockerfile.
type dockerfile struct {
	globalArgs map[string]string
	stages     []*stage
}

// args returns the words of an instruction (the values after its keyword).
func args(n *parser.Node) []string {
	var out []string
	for x := n.Next; x != nil; x = x.Next {
		out = append(out, x.Value)
	}
	return out
}

// nameValues returns the key/value pairs of an ENV or LABEL instruction.
// The parser gives triples (key, value, "=") for the key=value syntax and
// pairs for the legacy "ENV key value" one.
func nameValues(t *testing.T, n *parser.Node) [][2]string {
	t.Helper()
	a := args(n)
	step := 2
	if len(a)%3 == 0 {
		step = 3
		for i := 2; i < len(a); i += 3 {
			if a[i] != "=" {
				step = 2
			}
		}
	}
	if len(a)%step != 0 {
		t.Fatalf("Dockerfile:%d: cannot read %q", n.StartLine, n.Original)
	}
	var out [][2]string
	for i := 0; i < len(a); i += step {
		out = append(out, [2]string{a[i], a[i+1]})
	}
	return out
}

// envGetter turns a map into the shell package's variable lookup.
func envGetter(m map[string]string) shell.EnvGetter {
	var kv []string
	for k, v := range m {
		kv = append(kv, k+"="+v)
	}
	return shell.EnvsFromSlice(kv)
}

// expand substitutes variables and removes quotes, the way the builder does
// for FROM, LABEL, ENV and ARG values.
func expand(t *testing.T, word string, vars map[string]string) string {
	t.Helper()
	res, err := shell.NewLex('\\').ProcessWordWithMatches(word, envGetter(vars))
	if err != nil {
		t.Fatalf("expand %q: %v", word, err)
	}
	return res.Result
}

// parseDockerfile parses the repository's Dockerfile with BuildKit's own
// parser and groups its instructions into stages.
func parseDockerfile(t *testing.T) *dockerfile {
	t.Helper()
	res, err := parser.Parse(bytes.NewReader(readRepoFile(t, "Dockerfile")))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	for _, w := range res.Warnings {
		t.Errorf("Dockerfile parser warning: %s", w.Short)
	}
	df := &dockerfile{globalArgs: map[string]string{}}
	var cur *stage
	for _, n := range res.AST.Children {
		n.Value = strings.ToLower(n.Value)
		switch {
		case n.Value == "from":
			a := args(n)
			st := &stage{image: expand(t, a[0], df.globalArgs), flags: n.Flags}
			if len(a) == 3 && strings.EqualFold(a[1], "as") {
				st.name = a[2]
			} else if len(a) != 1 {
				t.Fatalf("Dockerfile:%d: malformed FROM %q", n.StartLine, n.Original)
			}
			df.stages = append(df.stages, st)
			cur = st
		case cur == nil && n.Value == "arg":
			for _, a := range args(n) {
				k, v, _ := strings.Cut(a, "=")
				df.globalArgs[k] = expand(t, v, df.globalArgs)
			}
		case cur == nil:
			t.Fatalf("Dockerfile:%d: %s before the first FROM", n.StartLine, n.Value)
		default:
			cur.nodes = append(cur.nodes, n)
		}
	}
	if len(df.stages) == 0 {
		t.Fatal("Dockerfile has no FROM")
	}
	return df
}

// instructions returns a stage's instructions of one kind (lower case).
func (s *stage) instructions(kind string) []*parser.Node {
	var out []*parser.Node
	for _, n := range s.nodes {
		if n.Value == kind {
			out = append(out, n)
		}
	}
	return out
}

// flagValue returns the value of --name=value among flags.
func flagValue(flags []string, name string) (string, bool) {
	for _, f := range flags {
		if v, ok := strings.CutPrefix(f, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// final returns the last stage: the image that ships.
func (df *dockerfile) final() *stage { return df.stages[len(df.stages)-1] }

// buildRun finds the one RUN that executes `go build` and its stage.
func (df *dockerfile) buildRun(t *testing.T) (*stage, *parser.Node) {
	t.Helper()
	var st *stage
	var run *parser.Node
	for _, s := range df.stages {
		for _, n := range s.instructions("run") {
			if strings.Contains(n.Original, "go build") {
				if run != nil {
					t.Fatalf("Dockerfile:%d: a second RUN with go build", n.StartLine)
				}
				st, run = s, n
			}
		}
	}
	if run == nil {
		t.Fatal("Dockerfile: no RUN runs go build")
	}
	return st, run
}

// dockerfileUser returns the numeric UID the final image runs as.
func dockerfileUser(t *testing.T) int64 {
	t.Helper()
	users := parseDockerfile(t).final().instructions("user")
	if len(users) == 0 {
		t.Fatal("final stage has no USER")
	}
	u := args(users[len(users)-1])[0]
	uid, gid, _ := strings.Cut(u, ":")
	n, err := strconv.ParseInt(uid, 10, 64)
	if err != nil {
		t.Fatalf("USER %q: the UID must be numeric (runAsNonRoot checks it): %v", u, err)
	}
	if gid != "" {
		if _, err := strconv.ParseInt(gid, 10, 64); err != nil {
			t.Fatalf("USER %q: the GID must be numeric: %v", u, err)
		}
	}
	return n
}

var urlRE = regexp.MustCompile(`^(https?://|git@|git://)`)

// TestDockerfileLint parses the Dockerfile with BuildKit's parser and checks
// the image's shape: named build stages, pinned bases, a distroless or
// scratch final stage with a numeric non-root USER, exec-form ENTRYPOINT,
// EXPOSE 9549, OCI labels, no ADD from URLs, and a static trimmed build.
func TestDockerfileLint(t *testing.T) {
	df := parseDockerfile(t)
	if len(df.stages) < 2 {
		t.Fatalf("want a multi-stage build, got %d stage(s)", len(df.stages))
	}
	names := map[string]bool{}
	for i, s := range df.stages {
		if i < len(df.stages)-1 && s.name == "" {
			t.Errorf("build stage %d (%s) has no name", i, s.image)
		}
		names[s.name] = true
		img := s.image
		if img == "scratch" {
			continue
		}
		ref, digest, _ := strings.Cut(img, "@")
		lastPart := ref[strings.LastIndex(ref, "/")+1:]
		_, tag, hasTag := strings.Cut(lastPart, ":")
		switch {
		case digest != "" && !strings.HasPrefix(digest, "sha256:"):
			t.Errorf("FROM %s: digest must be sha256", img)
		case digest == "" && (!hasTag || tag == "latest" || strings.Contains(tag, "$")):
			t.Errorf("FROM %s: pin a version tag or digest, not latest or an unset variable", img)
		}
		for _, a := range s.instructions("add") {
			for _, src := range args(a)[:len(args(a))-1] {
				if urlRE.MatchString(src) {
					t.Errorf("Dockerfile:%d: ADD from a URL (%s): download in a RUN with a checksum or COPY instead", a.StartLine, src)
				}
			}
		}
	}

	fin := df.final()
	if fin.image != "scratch" && !(strings.HasPrefix(fin.image, "gcr.io/distroless/static") && strings.Contains(fin.image, ":nonroot")) {
		t.Errorf("final image %s: want gcr.io/distroless/static...:nonroot or scratch", fin.image)
	}
	for _, n := range fin.nodes {
		switch n.Value {
		case "run":
			t.Errorf("Dockerfile:%d: RUN in the final stage (it has no shell)", n.StartLine)
		case "copy":
			from, ok := flagValue(n.Flags, "from")
			if !ok || !names[from] {
				t.Errorf("Dockerfile:%d: final stage copies %q, not from a build stage", n.StartLine, from)
			}
		}
	}

	if uid := dockerfileUser(t); uid == 0 {
		t.Error("final USER is root")
	}

	eps := fin.instructions("entrypoint")
	if len(eps) != 1 || !eps[0].Attributes["json"] {
		t.Errorf("want one ENTRYPOINT in exec (JSON) form")
	} else {
		ep := args(eps[0])
		copied := false
		for _, c := range fin.instructions("copy") {
			if a := args(c); a[len(a)-1] == ep[0] {
				copied = true
			}
		}
		if !copied {
			t.Errorf("ENTRYPOINT %s is not a file the final stage copies", ep[0])
		}
	}

	var exposed []string
	for _, e := range fin.instructions("expose") {
		exposed = append(exposed, args(e)...)
	}
	if !slices.Equal(exposed, []string{"9549"}) {
		t.Errorf("EXPOSE %v, want 9549", exposed)
	}

	labels := map[string]string{}
	finEnv := stageEnv(t, df, fin, nil)
	for _, n := range fin.instructions("label") {
		for _, kv := range nameValues(t, n) {
			labels[kv[0]] = expand(t, kv[1], finEnv)
		}
	}
	for _, k := range []string{"title", "description", "source", "documentation", "version", "revision"} {
		if labels["org.opencontainers.image."+k] == "" {
			t.Errorf("OCI label org.opencontainers.image.%s missing", k)
		}
	}

	bst, run := df.buildRun(t)
	if !strings.Contains(run.Original, "-trimpath") {
		t.Error("go build lacks -trimpath")
	}
	if env := stageEnv(t, df, bst, nil); env["CGO_ENABLED"] != "0" {
		t.Errorf("build stage CGO_ENABLED=%q, want 0 (static binary)", env["CGO_ENABLED"])
	}
}

// stageEnv returns the variables a RUN of the stage sees: its ARGs (with
// their defaults, or the values given in buildArgs) and its ENVs.
func stageEnv(t *testing.T, df *dockerfile, s *stage, buildArgs map[string]string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, n := range s.nodes {
		switch n.Value {
		case "arg":
			for _, a := range args(n) {
				k, v, hasDefault := strings.Cut(a, "=")
				switch {
				case buildArgs[k] != "":
					env[k] = buildArgs[k]
				case hasDefault:
					env[k] = expand(t, v, env)
				case df.globalArgs[k] != "":
					env[k] = df.globalArgs[k]
				}
			}
		case "env":
			for _, kv := range nameValues(t, n) {
				env[kv[0]] = expand(t, kv[1], env)
			}
		}
	}
	return env
}

// shellCommand splits a RUN's shell command into an environment prefix and
// argv, refusing anything but one simple command, so that running the words
// is the same as running the RUN line.
func shellCommand(t *testing.T, cmd string, env map[string]string) (prefix map[string]string, argv []string) {
	t.Helper()
	if strings.ContainsAny(cmd, ";|&`<>") || strings.Contains(cmd, "$(") {
		t.Fatalf("RUN %q: keep it one simple command so that the test can run it as is", cmd)
	}
	words, err := shell.NewLex('\\').ProcessWords(cmd, envGetter(env))
	if err != nil {
		t.Fatalf("RUN %q: %v", cmd, err)
	}
	prefix = map[string]string{}
	assign := regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)
	for len(words) > 0 && assign.MatchString(words[0]) {
		k, v, _ := strings.Cut(words[0], "=")
		prefix[k] = v
		words = words[1:]
	}
	return prefix, words
}

// buildContext copies the repository into dir as `docker build .` would
// send it: everything .dockerignore does not exclude.
func buildContext(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Open(repoPath(".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	patterns, err := ignorefile.ReadAll(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(repoRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(repoRoot, p)
		if err != nil || rel == "." {
			return err
		}
		excluded, err := pm.MatchesOrParentMatches(filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		if excluded {
			if d.IsDir() && !pm.Exclusions() {
				return filepath.SkipDir
			}
			return nil
		}
		dst := filepath.Join(dir, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(dst, 0o755)
		case d.Type().IsRegular():
			return copyFile(p, dst)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// replaceOutput rewrites the -o argument of a go build argv and returns the
// original output path.
func replaceOutput(t *testing.T, argv []string, out string) string {
	t.Helper()
	for i, a := range argv {
		if a == "-o" && i+1 < len(argv) {
			orig := argv[i+1]
			argv[i+1] = out
			return orig
		}
		if v, ok := strings.CutPrefix(a, "-o="); ok {
			argv[i] = "-o=" + out
			return v
		}
	}
	t.Fatalf("go build %v has no -o", argv)
	return ""
}

// imageBinary holds the binary built by TestDockerfileGoBuild for the
// container privilege tests.
var imageBinary struct {
	path, imagePath string
}

// TestDockerfileGoBuild runs the Dockerfile's go build command itself, with
// the build stage's environment, in a copy of the build context that honours
// .dockerignore, and checks that the result is a static, trimmed binary that
// runs. It then applies the Dockerfile's setcap command to it and runs it the
// way a container runtime does, as the image's non-root USER with
// NET_ADMIN only in the bounding set.
func TestDockerfileGoBuild(t *testing.T) {
	goTool := needTool(t, "go")
	df := parseDockerfile(t)
	bst, run := df.buildRun(t)
	// What `docker build --build-arg VERSION=... --build-arg REVISION=...`
	// on this machine's platform would pass.
	const version, revision = "0.0.0-deploytest", "deploytest0123"
	env := stageEnv(t, df, bst, map[string]string{
		"TARGETOS": runtime.GOOS, "TARGETARCH": runtime.GOARCH,
		"VERSION": version, "REVISION": revision,
	})
	prefix, argv := shellCommand(t, run.Next.Value, env)
	if len(argv) < 2 || argv[0] != "go" || argv[1] != "build" {
		t.Fatalf("RUN %q: want go build ...", run.Next.Value)
	}

	ctx := t.TempDir()
	buildContext(t, ctx)
	outDir, err := os.MkdirTemp(scratchDir, "image-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(outDir, "ct-exporter")
	imagePath := replaceOutput(t, argv, bin)
	shipped := false
	for _, c := range df.final().instructions("copy") {
		if a := args(c); len(a) == 2 && a[0] == imagePath {
			shipped = true
		}
	}
	if !shipped {
		t.Errorf("the final stage does not COPY the go build output %s", imagePath)
	}

	cmd := exec.Command(goTool, argv[1:]...)
	cmd.Dir = ctx
	cmd.Env = os.Environ()
	for _, m := range []map[string]string{env, prefix} {
		for k, v := range m {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	t.Logf("in a copy of the build context: %s go %s", fmtEnv(prefix), strings.Join(argv[1:], " "))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	checkStatic(t, bin)

	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	for k, want := range map[string]string{"-trimpath": "true", "CGO_ENABLED": "0", "GOOS": runtime.GOOS, "GOARCH": runtime.GOARCH} {
		if settings[k] != want {
			t.Errorf("build setting %s=%q, want %q", k, settings[k], want)
		}
	}

	for _, flag := range []string{"--version", "--help"} {
		out, err := exec.Command(bin, flag).CombinedOutput()
		if err != nil {
			t.Errorf("%s %s: %v\n%s", bin, flag, err, out)
		} else if len(bytes.TrimSpace(out)) == 0 {
			t.Errorf("%s %s printed nothing", bin, flag)
		} else {
			t.Logf("ct-exporter %s: %s", flag, firstLine(string(out)))
		}
		if flag == "--version" {
			// The -X flags of the build must reach the version package.
			for _, want := range []string{"version " + version, "revision: " + revision} {
				if !strings.Contains(string(out), want) {
					t.Errorf("--version lacks %q (-ldflags -X paths wrong?):\n%s", want, out)
				}
			}
		}
	}
	if file, err := exec.LookPath("file"); err == nil {
		out, _ := exec.Command(file, "-b", bin).CombinedOutput()
		t.Logf("file: %s", bytes.TrimSpace(out))
	}

	t.Run("setcap", func(t *testing.T) {
		nstest.RequireRoot(t, "setcap")
		var setcapRun *parser.Node
		for _, n := range bst.instructions("run") {
			if strings.Contains(n.Next.Value, "setcap") {
				setcapRun = n
			}
		}
		if setcapRun == nil {
			t.Fatal("build stage has no RUN setcap")
		}
		prefix, argv := shellCommand(t, setcapRun.Next.Value, env)
		if len(prefix) != 0 || len(argv) != 3 || argv[0] != "setcap" || argv[2] != imagePath {
			t.Fatalf("RUN %q: want setcap CAPS %s", setcapRun.Next.Value, imagePath)
		}
		argv[2] = bin
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", argv, err, out)
		}
		if _, err := unix.Getxattr(bin, "security.capability", make([]byte, 64)); err != nil {
			t.Fatalf("no file capability after %v: %v", argv, err)
		}
		imageBinary.path, imageBinary.imagePath = bin, imagePath
	})
	t.Run("image-privileges", testImagePrivileges)
}

// fmtEnv formats variable assignments for a log line.
func fmtEnv(m map[string]string) string {
	var kv []string
	for k, v := range m {
		kv = append(kv, k+"="+v)
	}
	slices.Sort(kv)
	return strings.Join(kv, " ")
}

// checkStatic requires an ELF executable with no interpreter and no shared
// libraries.
func checkStatic(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has a program interpreter: not static", bin)
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	if len(libs) != 0 {
		t.Errorf("%s needs shared libraries %v: not static", bin, libs)
	}
}

// podPrivileges returns setpriv arguments that start a process the way
// containerd starts the container of a DaemonSet manifest: its user and
// group, its added capabilities as the bounding set with nothing
// inheritable or ambient, and no_new_privs when privilege escalation is off.
// It also returns the container's args.
func podPrivileges(t *testing.T, rel string) (setprivArgs, args []string, uid int64) {
	t.Helper()
	ds := loadDaemonSet(t, rel)
	c := findContainer(t, &ds.Spec.Template.Spec, "ct-exporter")
	sc := c.SecurityContext
	if sc == nil || sc.RunAsUser == nil || sc.RunAsGroup == nil || sc.Capabilities == nil {
		t.Fatalf("%s: container securityContext lacks runAsUser, runAsGroup or capabilities", rel)
	}
	bounding := "-all"
	for _, c := range sc.Capabilities.Add {
		bounding += ",+" + strings.ToLower(string(c))
	}
	setprivArgs = []string{
		fmt.Sprintf("--reuid=%d", *sc.RunAsUser), fmt.Sprintf("--regid=%d", *sc.RunAsGroup), "--clear-groups",
		"--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=" + bounding,
	}
	if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
		setprivArgs = append(setprivArgs, "--no-new-privs")
	}
	return setprivArgs, c.Args, *sc.RunAsUser
}

// testImagePrivileges runs the image's binary (with its file capability)
// with the privileges the Kubernetes manifests give it, as containerd would
// start it: it must serve with the base DaemonSet's, and watch another
// namespace with the netns overlay's. Without NET_ADMIN in the bounding set
// the kernel refuses to execute it.
func testImagePrivileges(t *testing.T) {
	nstest.RequireRoot(t, "setpriv")
	setpriv := needTool(t, "setpriv")
	if imageBinary.path == "" {
		t.Fatal("the setcap step did not produce a binary")
	}
	bin := imageBinary.path

	t.Run("daemonset", func(t *testing.T) {
		priv, _, uid := podPrivileges(t, k8sDir+"/daemonset.yaml")
		if uid != dockerfileUser(t) {
			t.Errorf("runAsUser %d differs from the image's USER", uid)
		}
		ns := nstest.NewNamespace(t)
		argv := append(append([]string{setpriv}, priv...), "--", bin, "--web.listen-address="+listenInNetns)
		t.Logf("ip netns exec %s %s", ns.Name, strings.Join(argv, " "))
		p := startInNetns(t, ns, argv...)
		checkMetrics(t, p, ns)
		checkRunsAs(t, p, bin, int(uid), capNetAdmin)
	})
	t.Run("netns-overlay", func(t *testing.T) {
		priv, args, uid := podPrivileges(t, k8sDir+"/netns/daemonset-netns.yaml")
		target := nstest.NewNamespace(t)
		ns := nstest.NewNamespace(t)
		argv := append(append([]string{setpriv}, priv...), "--", bin)
		for _, a := range args {
			switch {
			case strings.HasPrefix(a, "--conntrack.netns=/run/netns/"):
				a = "--conntrack.netns=" + target.Path
			case strings.HasPrefix(a, "--web.listen-address="):
				a = "--web.listen-address=" + listenInNetns
			}
			argv = append(argv, a)
		}
		t.Logf("ip netns exec %s %s", ns.Name, strings.Join(argv, " "))
		p := startInNetns(t, ns, argv...)
		body := scrapeWhenUp(t, p, ns, listenInNetns, "/metrics")
		want := fmt.Sprintf("conntrack_entries{netns=%q}", target.Name)
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %s:\n%s", want, body)
		}
		checkRunsAs(t, p, bin, int(uid), capNetAdmin|capSysAdmin)
	})
	t.Run("without-NET_ADMIN", func(t *testing.T) {
		priv, _, _ := podPrivileges(t, k8sDir+"/daemonset.yaml")
		ns := nstest.NewNamespace(t)
		argv := append([]string{setpriv}, priv...)
		for i, a := range argv {
			if strings.HasPrefix(a, "--bounding-set=") {
				argv[i] = "--bounding-set=-all"
			}
		}
		argv = append(argv, "--", bin, "--web.listen-address="+listenInNetns)
		p := startInNetns(t, ns, argv...)
		err := p.wait(defaultWait)
		stderr := p.stderr.String()
		t.Logf("exit: %v; stderr: %q", err, stderr)
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("want a non-zero exit, got %v", err)
		}
		// The capability is only permitted by the file, so the kernel runs
		// the binary and the exporter itself names what is missing.
		if strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "CAP_NET_ADMIN") {
			t.Errorf("want one stderr line naming CAP_NET_ADMIN, got %q", stderr)
		}
	})
}
