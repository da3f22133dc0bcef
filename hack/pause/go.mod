module apitoken.dev/hack/pause

go 1.24
