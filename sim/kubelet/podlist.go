package kubelet

import "time"

// The wire shape of a v1 PodList, as the kubelet's /pods sends it. Only
// the parts a real answer always has are written, with the names and
// nesting of k8s.io/api/core/v1.

type podListJSON struct {
	Kind       string     `json:"kind"`
	APIVersion string     `json:"apiVersion"`
	Metadata   struct{}   `json:"metadata"`
	Items      []*podJSON `json:"items"`
}

type podJSON struct {
	Metadata objectMetaJSON `json:"metadata"`
	Spec     podSpecJSON    `json:"spec"`
	Status   podStatusJSON  `json:"status"`
}

type objectMetaJSON struct {
	Name              string            `json:"name"`
	GenerateName      string            `json:"generateName,omitempty"`
	Namespace         string            `json:"namespace"`
	UID               string            `json:"uid"`
	ResourceVersion   string            `json:"resourceVersion"`
	CreationTimestamp time.Time         `json:"creationTimestamp"`
	Labels            map[string]string `json:"labels,omitempty"`
	Annotations       map[string]string `json:"annotations,omitempty"`
	OwnerReferences   []ownerRefJSON    `json:"ownerReferences,omitempty"`
}

type ownerRefJSON struct {
	APIVersion         string `json:"apiVersion"`
	Kind               string `json:"kind"`
	Name               string `json:"name"`
	UID                string `json:"uid"`
	Controller         bool   `json:"controller"`
	BlockOwnerDeletion bool   `json:"blockOwnerDeletion"`
}

type podSpecJSON struct {
	Volumes                       []struct{}      `json:"volumes"`
	InitContainers                []containerJSON `json:"initContainers,omitempty"`
	Containers                    []containerJSON `json:"containers"`
	RestartPolicy                 string          `json:"restartPolicy"`
	TerminationGracePeriodSeconds int             `json:"terminationGracePeriodSeconds"`
	DNSPolicy                     string          `json:"dnsPolicy"`
	ServiceAccountName            string          `json:"serviceAccountName"`
	DeprecatedServiceAccount      string          `json:"serviceAccount"`
	NodeName                      string          `json:"nodeName"`
	SchedulerName                 string          `json:"schedulerName"`
}

type containerJSON struct {
	Name                     string   `json:"name"`
	Image                    string   `json:"image"`
	Command                  []string `json:"command,omitempty"`
	Resources                struct{} `json:"resources"`
	TerminationMessagePath   string   `json:"terminationMessagePath"`
	TerminationMessagePolicy string   `json:"terminationMessagePolicy"`
	ImagePullPolicy          string   `json:"imagePullPolicy"`
}

type podStatusJSON struct {
	Phase                 string                `json:"phase"`
	Conditions            []conditionJSON       `json:"conditions"`
	HostIP                string                `json:"hostIP"`
	PodIP                 string                `json:"podIP,omitempty"`
	StartTime             time.Time             `json:"startTime"`
	InitContainerStatuses []containerStatusJSON `json:"initContainerStatuses,omitempty"`
	ContainerStatuses     []containerStatusJSON `json:"containerStatuses"`
	QOSClass              string                `json:"qosClass"`
}

type conditionJSON struct {
	Type               string    `json:"type"`
	Status             string    `json:"status"`
	LastProbeTime      *struct{} `json:"lastProbeTime"`
	LastTransitionTime time.Time `json:"lastTransitionTime"`
}

type containerStatusJSON struct {
	Name         string             `json:"name"`
	State        containerStateJSON `json:"state"`
	LastState    struct{}           `json:"lastState"`
	Ready        bool               `json:"ready"`
	RestartCount int                `json:"restartCount"`
	Image        string             `json:"image"`
	ImageID      string             `json:"imageID"`
	ContainerID  string             `json:"containerID,omitempty"`
	Started      *bool              `json:"started,omitempty"`
}

type containerStateJSON struct {
	Waiting *struct {
		Reason string `json:"reason"`
	} `json:"waiting,omitempty"`
	Running *struct {
		StartedAt time.Time `json:"startedAt"`
	} `json:"running,omitempty"`
	Terminated *struct {
		ExitCode    int       `json:"exitCode"`
		Reason      string    `json:"reason"`
		StartedAt   time.Time `json:"startedAt"`
		FinishedAt  time.Time `json:"finishedAt"`
		ContainerID string    `json:"containerID,omitempty"`
	} `json:"terminated,omitempty"`
}

// render turns a test's Pod into the kubelet's JSON form.
func render(p Pod, created time.Time) *podJSON {
	out := &podJSON{}
	m := &out.Metadata
	m.Name, m.Namespace, m.UID = p.Name, p.Namespace, p.UID
	m.ResourceVersion = "1"
	m.CreationTimestamp = created
	m.Labels = p.Labels
	m.Annotations = map[string]string{"kubernetes.io/config.source": "api", "kubernetes.io/config.seen": created.Format(time.RFC3339Nano)}
	for _, o := range p.Owners {
		m.OwnerReferences = append(m.OwnerReferences, ownerRefJSON{APIVersion: "apps/v1", Kind: o.Kind, Name: o.Name, UID: o.UID, Controller: true, BlockOwnerDeletion: true})
	}
	if len(p.Owners) > 0 {
		m.GenerateName = p.Owners[0].Name + "-"
	}
	s := &out.Spec
	s.Volumes = []struct{}{}
	s.RestartPolicy, s.DNSPolicy, s.SchedulerName = "Always", "ClusterFirst", "default-scheduler"
	s.TerminationGracePeriodSeconds = 30
	s.ServiceAccountName, s.DeprecatedServiceAccount = p.ServiceAccount, p.ServiceAccount
	s.NodeName = p.NodeName
	st := &out.Status
	st.Phase, st.QOSClass, st.HostIP = "Running", "BestEffort", "127.0.0.1"
	st.StartTime = created
	for _, c := range []string{"Initialized", "Ready", "ContainersReady", "PodScheduled"} {
		st.Conditions = append(st.Conditions, conditionJSON{Type: c, Status: "True", LastTransitionTime: created})
	}
	st.ContainerStatuses = []containerStatusJSON{}
	for _, c := range p.InitContainers {
		s.InitContainers = append(s.InitContainers, spec(c))
		cs := status(c)
		if c.ContainerID != "" {
			cs.State.Running = nil
			cs.State.Terminated = &struct {
				ExitCode    int       `json:"exitCode"`
				Reason      string    `json:"reason"`
				StartedAt   time.Time `json:"startedAt"`
				FinishedAt  time.Time `json:"finishedAt"`
				ContainerID string    `json:"containerID,omitempty"`
			}{Reason: "Completed", StartedAt: created, FinishedAt: created, ContainerID: c.ContainerID}
		}
		st.InitContainerStatuses = append(st.InitContainerStatuses, cs)
	}
	s.Containers = []containerJSON{}
	for _, c := range p.Containers {
		s.Containers = append(s.Containers, spec(c))
		st.ContainerStatuses = append(st.ContainerStatuses, status(c))
	}
	return out
}

func spec(c Container) containerJSON {
	return containerJSON{
		Name: c.Name, Image: c.Image, TerminationMessagePath: "/dev/termination-log",
		TerminationMessagePolicy: "File", ImagePullPolicy: "IfNotPresent",
	}
}

// status is a container's status: running once it has an ID, waiting in
// ContainerCreating (no ID, no imageID) before, as the kubelet reports.
func status(c Container) containerStatusJSON {
	cs := containerStatusJSON{Name: c.Name, Image: c.Image, ImageID: c.ImageID, ContainerID: c.ContainerID}
	started := c.ContainerID != ""
	cs.Started = &started
	if started {
		cs.Ready = true
		cs.State.Running = &struct {
			StartedAt time.Time `json:"startedAt"`
		}{StartedAt: time.Now().UTC().Truncate(time.Second)}
	} else {
		cs.State.Waiting = &struct {
			Reason string `json:"reason"`
		}{Reason: "ContainerCreating"}
	}
	return cs
}
