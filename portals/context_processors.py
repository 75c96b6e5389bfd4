def portal(request):
    return {"portal_name": "OLVM"}
