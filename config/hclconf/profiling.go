package hclconf

// ParseProfiling reads SPIRE's profiling_enabled and profiling_port from
// the server or agent block and returns the port to serve pprof on, 0 when
// profiling is off. profiling_freq and profiling_names (periodic profile
// files) are accepted with a warning.
func ParseProfiling(s *Section) int {
	var on bool
	s.Bool("profiling_enabled", &on)
	var port int
	s.Port("profiling_port", &port)
	s.Ignore("profiling_freq")
	s.Ignore("profiling_names")
	if !on {
		return 0
	}
	if port == 0 {
		s.Errorf("profiling_enabled", "set without profiling_port (add e.g. profiling_port = 6060)")
	}
	return port
}
